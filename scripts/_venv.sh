# shellcheck shell=bash
# Sourced by the project's entry points: make sure .venv exists and holds the project with its dev extra, and
# that .venv/wheelhouse/host holds this machine's wheels of requirements/device.lock (the virtual device and
# the tests install components offline from it: a test run never downloads, and their Install steps share
# finished environments in .venv/environments). Idempotent: reinstalls only when
# pyproject.toml changed since the last install, downloads only when the lock changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
stamp="$VENV/.device-agent-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "device-agent: creating $(basename "$VENV") with $("$PYTHON_BIN" --version)" >&2
  "$PYTHON_BIN" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "device-agent: installing the project and its dev tools into .venv" >&2
  log="$VENV/install.log"
  if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip \
         && "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT[dev]"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "device-agent: installing into .venv failed; the whole log is in .venv/install.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

# download_locked_wheels DIR [pip download options]: DIR holds exactly the lock's wheels for the platform the
# options name (this machine's without options), each checked against the lock's hashes by pip.
download_locked_wheels() {
  local dir="$1"; shift
  local lock="$ROOT/requirements/device.lock"
  local key
  key="$({ sha256sum "$lock" | cut -d' ' -f1; echo "$*"; } | sha256sum | cut -d' ' -f1)"
  if [ -f "$dir/.lock-key" ] && [ "$(cat "$dir/.lock-key")" = "$key" ]; then
    return 0
  fi
  echo "device-agent: downloading the locked wheels into ${dir#"$ROOT/"}" >&2
  rm -rf "$dir" && mkdir -p "$dir"
  if ! "$VENV/bin/python" -m pip download --disable-pip-version-check --quiet --require-hashes \
       --only-binary :all: --no-deps --dest "$dir" -r "$lock" "$@" >"$dir.log" 2>&1; then
    tail -n 40 "$dir.log" >&2
    echo "device-agent: downloading the locked wheels failed; the whole log is in ${dir#"$ROOT/"}.log" >&2
    rm -rf "$dir"
    return 1
  fi
  echo "$key" > "$dir/.lock-key"
}

if [ -f "$ROOT/requirements/device.lock" ]; then
  download_locked_wheels "$VENV/wheelhouse/host"
  export DEVICE_AGENT_WHEELHOUSE="$VENV/wheelhouse/host"
fi
# Components of every virtual device on this machine share one finished environment per lock (built once, by
# the first Install that needs it): device_agent/install.py. A real device never sets this.
export DEVICE_AGENT_ENVIRONMENT_CACHE="$VENV/environments"
if [ -n "${DEVICE_AGENT_WHEELHOUSE:-}" ]; then
  # Build it now (a no-op when it exists), so a virtual device's first start is as quick as its next.
  warm="$(mktemp -d)"
  mkdir "$warm/requirements"
  ln -s "$ROOT/requirements/device.lock" "$warm/requirements/device.lock"
  ln -s "$DEVICE_AGENT_WHEELHOUSE" "$warm/wheels"
  if ! "$VENV/bin/python" -m device_agent.install --artifact "$warm" --work "$warm/work" >"$VENV/environments.log" 2>&1; then
    tail -n 20 "$VENV/environments.log" >&2
    rm -rf "$warm"
    echo "device-agent: building the shared component environment failed (.venv/environments.log)" >&2
    exit 1
  fi
  rm -rf "$warm"
fi
export PATH="$VENV/bin:$PATH"
