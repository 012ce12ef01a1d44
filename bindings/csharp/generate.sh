#!/usr/bin/env bash
# Builds libstorycad_ffi for this machine and generates its C# bindings with uniffi-bindgen-cs.
#
#   bindings/csharp/generate.sh [--release] [--rid RID]
#
# Writes (both git-ignored):
#   src/StoryCad.Collaborator.Client/Generated/storycad_ffi.cs       the generated bindings
#   src/StoryCad.Collaborator.Client/runtimes/<RID>/native/<library>  the native library
#
# RID is this machine's .NET runtime identifier unless given (win-x64, linux-x64, osx-arm64,
# ...). The library is built for the host: build each RID on its own OS (see bindings/README.md).
# Needs: cargo, and uniffi-bindgen-cs v0.11.0+v0.31.0 on PATH:
#   cargo install uniffi-bindgen-cs --git https://github.com/NordSecurity/uniffi-bindgen-cs \
#     --tag v0.11.0+v0.31.0
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
project="$here/src/StoryCad.Collaborator.Client"

profile=debug
release_flag=""
rid=""
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; release_flag="--release" ;;
    --rid) rid="${2:?--rid needs a value}"; shift ;;
    *) echo "generate.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$rid" ]; then
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) rid=linux-x64 ;;
    Linux-aarch64) rid=linux-arm64 ;;
    Darwin-arm64) rid=osx-arm64 ;;
    Darwin-x86_64) rid=osx-x64 ;;
    MINGW*-x86_64 | MSYS*-x86_64 | CYGWIN*-x86_64) rid=win-x64 ;;
    *) echo "generate.sh: unknown host $(uname -s)-$(uname -m); pass --rid" >&2; exit 2 ;;
  esac
fi
case "$rid" in
  win-*) lib=storycad_ffi.dll ;;
  osx-*) lib=libstorycad_ffi.dylib ;;
  *) lib=libstorycad_ffi.so ;;
esac

if ! command -v uniffi-bindgen-cs >/dev/null; then
  echo "generate.sh: uniffi-bindgen-cs is not on PATH; install it with" >&2
  echo "  cargo install uniffi-bindgen-cs --git https://github.com/NordSecurity/uniffi-bindgen-cs --tag v0.11.0+v0.31.0" >&2
  exit 1
fi

cd "$root"
# shellcheck disable=SC2086 # an empty flag must vanish
cargo build -p storycad-ffi --lib $release_flag
target_dir="${CARGO_TARGET_DIR:-$root/target}"
built="$target_dir/$profile/$lib"

# Library mode: the API comes from the metadata compiled into the library, the settings from
# bindings/uniffi.toml (namespace StoryCad.Collaborator.Ffi, public types).
uniffi-bindgen-cs --library "$built" --out-dir "$project/Generated" --no-format
mkdir -p "$project/runtimes/$rid/native"
cp "$built" "$project/runtimes/$rid/native/$lib"
echo "generate.sh: $project/Generated/storycad_ffi.cs and runtimes/$rid/native/$lib"
