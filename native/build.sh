#!/bin/sh
# Build the native forwarder: native/build.sh OUTPUT [extra compiler flags...]
# (make setup, the Containerfile and the tests build it with these flags; CC picks the compiler).
set -eu
out=$1
shift
mkdir -p "$(dirname "$out")"
${CC:-cc} -std=c99 -O2 -Wall -Wextra -Werror -pedantic "$@" -o "$out" "$(dirname "$0")/cni-ipam-forward.c"
