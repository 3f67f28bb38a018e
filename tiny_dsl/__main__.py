"""`python -m tiny_dsl` is the `tts` command, for environments without the script on PATH."""

from tiny_dsl.cli import main

main(prog_name="tts")
