#!/usr/bin/env bash
# Kept for old habits: the generation is `cargo xtask csharp [--release] [--rid RID]` (xtask/src/csharp.rs).
cd "$(dirname "$0")/../.." && exec cargo xtask csharp "$@"
