# Sourced by .ci/setup and .ci/compat: how torch gets installed.
#
# From PyPI alone, `pip install torch==2.13.0` on Linux resolves to the CUDA build and some twenty nvidia-* /
# cuda-* packages (several GB). PyTorch's CPU wheel index has the same version as `2.13.0+cpu`, which
# `torch==2.13.0` accepts, so it is the primary index for this one install (environment.yml does the same;
# a pip configuration's extra indexes and find-links still apply). Where that index cannot be reached, the
# install falls back to the usual index and says it may be the CUDA build.
#
# Environment: TORCH_SPEC (default torch==2.13.0; a path to a wheel works too), TORCH_INDEX (default
# https://download.pytorch.org/whl/cpu; empty: the usual index only), TORCH_INDEX_REACHABLE (1 or 0: skip
# the network probe, for tests).

TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}

# True when TORCH_INDEX answers (any HTTP status counts: the server is there) within 10 s.
torch_index_reachable() {
  case "${TORCH_INDEX_REACHABLE:-probe}" in 1) return 0 ;; 0) return 1 ;; esac
  "$PYTHON" - "$TORCH_INDEX" <<'PYEOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1].rstrip("/") + "/torch/", method="HEAD"), timeout=10)
except urllib.error.HTTPError:
    pass  # an answer: reachable
except Exception:
    sys.exit(1)
PYEOF
}

torch_fallback_note() {
  echo "note: PyTorch's CPU wheel index ($TORCH_INDEX) is not reachable; installing $TORCH_SPEC from the usual" \
    "package index, which on Linux may be the CUDA build (several GB with its nvidia-* packages). To avoid" \
    "that, download the CPU wheel and pass it: TORCH_SPEC=/path/to/torch-...+cpu-...whl" >&2
}

# Sets TORCH_INSTALL, the arguments of the pip install of torch (the CPU index first where it answers; a wheel
# file given as TORCH_SPEC is installed as it is, no index asked and nothing to warn about).
torch_install_args() {
  if [ -f "$TORCH_SPEC" ]; then
    TORCH_INSTALL=("$TORCH_SPEC")
  elif [ -n "$TORCH_INDEX" ] && torch_index_reachable; then
    TORCH_INSTALL=(--index-url "$TORCH_INDEX" "$TORCH_SPEC")
  else
    [ -z "$TORCH_INDEX" ] || torch_fallback_note
    TORCH_INSTALL=("$TORCH_SPEC")
  fi
}

# Installs torch with pip_install (defined by the sourcing script); a failure on the CPU index (a proxy that
# lets the probe through but not the download) falls back to the usual index, saying so.
install_torch() {
  torch_install_args
  if ! pip_install "${TORCH_INSTALL[@]}"; then
    [ "${TORCH_INSTALL[0]}" = --index-url ] || return 1
    torch_fallback_note
    pip_install "$TORCH_SPEC"
  fi
}
