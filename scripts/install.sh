#!/usr/bin/env bash
# Puts nfqlb on the PATH: $PREFIX/bin/nfqlb, a symbolic link to this checkout's scripts/nfqlb (which runs
# dist/nfqlb when built, else the sources), the bash, zsh and fish completions (`nfqlb completion SHELL`) and the
# man page (docs/nfqlb.1). PREFIX defaults to /usr/local; `PREFIX=$HOME/.local scripts/install.sh` installs for
# one user. `scripts/install.sh --uninstall` removes what it installs (only files that are ours: the link to
# this checkout and the files of these names). Prints each file it writes or removes. docs/cli.md.
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
root="$(dirname "$here")"
prefix="${PREFIX:-/usr/local}"
bin="$prefix/bin/nfqlb"
files=(
  "bash:$prefix/share/bash-completion/completions/nfqlb"
  "zsh:$prefix/share/zsh/site-functions/_nfqlb"
  "fish:$prefix/share/fish/vendor_completions.d/nfqlb.fish"
)
man="$prefix/share/man/man1/nfqlb.1"

case "${1:-}" in
  "") ;;
  --uninstall)
    if [ -L "$bin" ] && [ "$(readlink "$bin")" = "$root/scripts/nfqlb" ]; then rm -f "$bin" && echo "removed $bin"; fi
    for f in "${files[@]}" "man:$man"; do
      path="${f#*:}"
      if [ -f "$path" ]; then rm -f "$path" && echo "removed $path"; fi
    done
    exit 0
    ;;
  *) echo "install.sh: unknown argument '$1' (expected nothing or --uninstall)" >&2; exit 1 ;;
esac

if [ -e "$bin" ] && ! [ -L "$bin" ]; then
  echo "install.sh: $bin exists and is not a link; not replacing it" >&2
  exit 1
fi
mkdir -p "$prefix/bin"
ln -sfn "$root/scripts/nfqlb" "$bin"
echo "installed $bin -> $root/scripts/nfqlb"
for f in "${files[@]}"; do
  shell="${f%%:*}" path="${f#*:}"
  mkdir -p "$(dirname "$path")"
  # written to a temporary file first: a failed run leaves no half script behind
  "$root/scripts/nfqlb" completion "$shell" >"$path.tmp" && mv "$path.tmp" "$path" || {
    rm -f "$path.tmp"
    echo "install.sh: nfqlb completion $shell failed" >&2
    exit 1
  }
  echo "installed $path"
done
mkdir -p "$(dirname "$man")"
install -m 0644 "$root/docs/nfqlb.1" "$man"
echo "installed $man"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on your PATH" ;;
esac
