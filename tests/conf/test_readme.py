"""README.md: the project's rule for its start, and its example configurations.

The README is what a new user runs and copies first, so it must start with the two set-up
commands, and every configuration it shows must load as written (the reference, with its
placeholders, lives in docs/configuration.md).
"""

import re
from pathlib import Path

from tunsec.conf.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), re.S | re.M)


def test_readme_starts_with_the_two_set_up_commands() -> None:
    lines = README.read_text().splitlines()
    assert lines[0] == "# tunsec"
    first = next(line for line in lines[1:] if line)
    assert first == "```sh"            # nothing between the title and the commands
    lang, text = _blocks()[0]
    commands = [line.split("#")[0].strip() for line in text.splitlines()]
    assert (lang, commands) == ("sh", ["bash scripts/make.sh demo", "bash scripts/make.sh test"])


def test_readme_example_configurations_load_as_written() -> None:
    configs = [text for lang, text in _blocks() if not lang]
    loaded = [parse_config(text, f"README example {i}") for i, text in enumerate(configs, 1)]
    # site-to-site, the road-warrior gateway, its client
    assert [[c.name for c in cfg.connections] for cfg in loaded] == [["site-b"], ["rw"], ["gw"]]
    assert [[p.name for p in cfg.pools] for cfg in loaded] == [[], ["rw4"], []]
    assert all(not cfg.warnings for cfg in loaded)
