#!/usr/bin/env bash
# Builds llama.cpp (CPU only, the library alone) from the source vendored in the PyPI sdist of
# llama-cpp-python: the reference that memwarden-plan's oracle test (tests/llama_oracle.rs)
# compares `estimate` against. Cached outside the checkout; a second run does nothing.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${MEMWARDEN_CACHE:-$HOME/.cache/memwarden}"
dest="$cache/llama.cpp-$version"
if [ -f "$dest/.built" ]; then
  exit 0
fi
for tool in cmake g++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null
    break
  fi
done
mkdir -p "$cache"
work="$(mktemp -d "$cache/.llama-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Only this package from source; its build tools (for pip's metadata step) come as wheels.
python3 -m pip download -q --no-binary llama-cpp-python --no-deps -d "$work" "llama-cpp-python==$version"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' \
  -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_COMMON=OFF >/dev/null
cmake --build "$work/build" --target llama -j "${LLAMA_BUILD_JOBS:-2}" >/dev/null
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/lib" "$dest.tmp/include"
find "$work/build" -name '*.so*' -exec cp -a {} "$dest.tmp/lib/" \;
cp "$src"/include/*.h "$src"/ggml/include/*.h "$dest.tmp/include/"
# The sdist carries no git history: the library's own version names the llama.cpp built.
libv="$(cd "$dest.tmp/lib" && ls libllama.so.*.*.* | head -1)"
echo "llama-cpp-python $version, $libv" >"$dest.tmp/VERSION"
touch "$dest.tmp/.built"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
