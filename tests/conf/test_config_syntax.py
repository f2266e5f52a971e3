"""The strongSwan settings syntax of tunsec.conf: file and line of every key, comments, quoting,
sections, syntax errors, and include."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from config_data import (
    EXAMPLE,
    KEY_IN_HEX,
    LINE,
    issues_of,
    manual,
    only_issue,
    tunnel,
)

from tunsec.conf.config import load_config, parse_config
from tunsec.conf.errors import ConfigError, ConfigIssue
from tunsec.conf.syntax import parse_settings

# --------------------------------------------------------------------------
# The settings syntax
# --------------------------------------------------------------------------


def test_settings_tree_records_file_and_line() -> None:
    root = parse_settings("a {\n  b = 1\n  c {\n    d = two words\n  }\n}\n", "x.conf")
    a = root.sections["a"]
    assert (a.name, a.path, a.file, a.line) == ("a", "a", "x.conf", 1)
    b = a.settings["b"]
    assert (b.value, b.file, b.line) == ("1", "x.conf", 2)
    c = a.sections["c"]
    assert (c.path, c.line) == ("a.c", 3)
    assert (c.settings["d"].value, c.settings["d"].line) == ("two words", 4)


def test_comments() -> None:
    root = parse_settings(
        "# leading comment\na { # after brace\n  b = x # trailing\n  # indented\n"
        '  c = "not # a comment"   # but this is\n  d = e#f\n}\n'
    )
    a = root.sections["a"]
    assert a.settings["b"].value == "x"
    assert a.settings["c"].value == "not # a comment"
    assert a.settings["d"].value == "e"


def test_quoting_and_escapes() -> None:
    text = (
        'a {\n  spaced = "  two  spaces  "\n  esc = "q\\"uote \\\\ tab\\t nl\\n x\\y"\n'
        '  multi = "line one\nline two"\n  cont = "joined \\\n here"\n'
        '  mixed = bare   "quoted  part"  tail\n  empty = ""\n  glued = a"b"\n}\n'
    )
    a = parse_settings(text).sections["a"]
    assert a.settings["spaced"].value == "  two  spaces  "
    assert a.settings["esc"].value == 'q"uote \\ tab\t nl\n xy'
    assert a.settings["multi"].value == "line one\nline two"
    assert a.settings["cont"].value == "joined  here"
    assert a.settings["mixed"].value == "bare quoted  part tail"
    assert a.settings["empty"].value == ""
    assert a.settings["glued"].value == "a b"
    # A multi-line string does not disturb later line numbers.
    assert a.settings["mixed"].line == 8


def test_bare_values_are_joined_by_single_spaces_and_keep_special_chars() -> None:
    a = parse_settings("a {\n  v =   x    y\t z  \n  w = b=c{d]\n}\n").sections["a"]
    assert a.settings["v"].value == "x y z"
    assert a.settings["w"].value == "b=c{d]"


def test_one_line_sections_and_brace_on_next_line() -> None:
    root = parse_settings("a { b = c }\nd\n{\n  e = f }\ng { h { i = j } }\n")
    assert root.sections["a"].settings["b"].value == "c"
    assert root.sections["d"].settings["e"].value == "f"
    assert root.sections["d"].line == 2
    assert root.sections["g"].sections["h"].settings["i"].value == "j"


def test_sections_merge_and_later_keys_override() -> None:
    root = parse_settings("a {\n  x = 1\n  y = 1\n}\na {\n  x = 2\n  s { z = 3 }\n}\n")
    a = root.sections["a"]
    assert a.line == 1
    assert (a.settings["x"].value, a.settings["x"].line) == ("2", 6)
    assert a.settings["y"].value == "1"
    assert a.sections["s"].settings["z"].value == "3"


def test_merged_manual_tunnel_across_blocks() -> None:
    text = manual(tunnel("t", spi_out=None)) + "manual {\n  t {\n    spi_out = 0x3003\n  }\n}\n"
    (t,) = parse_config(text).manual
    assert t.spi_out == 0x3003


def test_crlf_line_endings() -> None:
    config = parse_config(EXAMPLE.replace("\n", "\r\n"))
    assert config.manual[0].spi_in == 0xC0010001
    with pytest.raises(ConfigError) as info:
        parse_config(EXAMPLE.replace("\n", "\r\n").replace("esn = no", "esn = maybe"), "c")
    assert str(info.value) == f"c:{LINE['esn']}: manual.site-b.esn: not a boolean (yes or no): 'maybe'"


def test_key_and_section_may_share_a_name_like_strongswan() -> None:
    root = parse_settings("a = 1\na { b = 2 }\n")
    assert root.settings["a"].value == "1"
    assert root.sections["a"].settings["b"].value == "2"


def test_parse_settings_raises_without_an_issue_list() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings("a {\n", "f.conf")
    assert [str(i) for i in info.value.errors] == ["f.conf:1: a: section 'a' is never closed (missing '}')"]
    issues: list[ConfigIssue] = []
    root = parse_settings("a {\n b = 1\n", "f.conf", issues)
    assert root.sections["a"].settings["b"].value == "1"
    assert len(issues) == 1


# --------------------------------------------------------------------------
# Syntax errors: file, line and key
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("tunsec {\n  tun = x\n", 1, "tunsec", "section 'tunsec' is never closed (missing '}')"),
        ("tunsec {\n}\n}\n", 3, "", "'}' without a matching '{'"),
        ("tunsec {\n  tun x\n}\n", 2, "tunsec.tun", "expected '= value' or '{' after the name"),
        ("tunsec {\n  tun\n}\n", 2, "tunsec.tun", "expected '= value' or '{' after the name"),
        ("tunsec {\n  = x\n}\n", 2, "tunsec", "'=' without a key name"),
        ("{\n}\n", 1, "", "'{' without a section name"),
        (
            'tunsec {\n  "tun" = x\n}\n',
            2,
            "tunsec",
            "unexpected quoted string (quotes are only allowed in values)",
        ),
        ('tunsec {\n  tun = "x\n}\n', 2, "tunsec.tun", "unterminated quoted string"),
    ],
)
def test_syntax_errors(text: str, line: int, key: str, message: str) -> None:
    issue = only_issue(text, "s.conf")
    assert issue == ConfigIssue("s.conf", line, key, message)


def test_unterminated_string_does_not_swallow_the_rest() -> None:
    text = 'tunsec {\n  tun = "oops\n  mtu = 5\n}\n'
    errors = [str(e) for e in issues_of(text, "f")]
    assert errors == [
        "f:2: tunsec.tun: unterminated quoted string",
        "f:3: tunsec.mtu: 5 is out of range 576..65535",
    ]


def test_recovery_after_garbage_keeps_braces_balanced() -> None:
    text = "tunsec {\n  junk junk { nested = 1 }\n  mtu = 1\n}\nmanual {\n}\n"
    errors = issues_of(text, "f")
    assert [(e.line, e.key) for e in errors] == [(2, "tunsec.junk"), (3, "tunsec.mtu")]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    text = "a {\n" * 200 + "}\n" * 200
    errors = issues_of(text)
    assert any("nested deeper" in e.message for e in errors)
    text = "x y {\n" * 200 + "}\n" * 200
    assert issues_of(text)


def test_garbage_line_with_hex_is_not_echoed() -> None:
    text = EXAMPLE.replace("    esn = no", f"    {KEY_IN_HEX}")
    issue = only_issue(text)
    assert issue.line == LINE["esn"]
    assert issue.key == "manual.site-b"
    assert KEY_IN_HEX not in str(issue)


# --------------------------------------------------------------------------
# include
# --------------------------------------------------------------------------


def test_include_glob_relative_to_the_including_file(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "20-b.conf").write_text(manual(tunnel("b", spi_in="0x1002")))
    (conf_d / "10-a.conf").write_text(manual(tunnel("a")))
    (conf_d / "ignored.txt").write_text("garbage garbage\n")
    main = tmp_path / "tunsec.conf"
    main.write_text("tunsec {\n  mtu = 1400\n}\ninclude conf.d/*.conf\ninclude nothing-here/*.conf\n")
    config = load_config(main)
    assert config.path == str(main)
    assert [t.name for t in config.manual] == ["a", "b"]
    assert config.manual[0].file == str(conf_d / "10-a.conf")
    assert config.tunsec.mtu == 1400


def test_errors_in_included_files_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_text("# first\ntunsec {\n  mtu = tiny\n}\n")
    main = tmp_path / "main.conf"
    main.write_text("manual {\n  x {\n  }\n}\ninclude bad.conf\ntunsec {\n  workers = 0\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    errors = [str(e) for e in info.value.errors]
    assert errors == [
        f"{main}:2: manual.x.local_addr: required key is missing",
        f"{main}:2: manual.x.remote_addr: required key is missing",
        f"{main}:2: manual.x.local_ts: required key is missing",
        f"{main}:2: manual.x.remote_ts: required key is missing",
        f"{main}:2: manual.x.spi_in: required key is missing",
        f"{main}:2: manual.x.spi_out: required key is missing",
        f"{main}:2: manual.x.key_in: required key is missing",
        f"{main}:2: manual.x.key_out: required key is missing",
        f"{main}:7: tunsec.workers: 0 is out of range 1..16",
        f"{tmp_path / 'bad.conf'}:3: tunsec.mtu: not an MTU: 'tiny'",
    ]


def test_missing_include_is_an_error_at_the_include_line(tmp_path: Path) -> None:
    main = tmp_path / "main.conf"
    main.write_text("tunsec {\n}\n\ninclude missing.conf   # comment\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    (issue,) = info.value.errors
    assert (issue.file, issue.line, issue.key) == (str(main), 4, "include")
    assert issue.message == f"'{tmp_path / 'missing.conf'}': cannot read: No such file or directory"


def test_include_inside_a_section_and_quoted_paths(tmp_path: Path) -> None:
    (tmp_path / "my tunnel.conf").write_text(tunnel("q").replace("  q {", "q {"))
    (tmp_path / "other one.conf").write_text(tunnel("r", spi_in="0x1003"))
    main = tmp_path / "main.conf"
    main.write_text('manual {\n  include "my tunnel.conf"\n  include other\\ one.conf\n}\n')
    assert [t.name for t in load_config(main).manual] == ["q", "r"]


def test_include_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "t.conf").write_text("tunsec { tun = abs0 }\n")
    assert parse_config(f"include {tmp_path / 't.conf'}\n").tunsec.tun == "abs0"


def test_include_loop_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("include b.conf\n")
    (tmp_path / "b.conf").write_text("\ninclude a.conf\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "a.conf")
    (issue,) = info.value.errors
    assert (issue.file, issue.line, issue.key) == (str(tmp_path / "b.conf"), 2, "include")
    assert "include loop" in issue.message


def test_include_syntax_errors(tmp_path: Path) -> None:
    main = tmp_path / "m.conf"
    main.write_text("include\ninclude  \ninclude a.conf b.conf\ninclude = 1\ninclude { }\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert [(e.line, e.key, e.message) for e in info.value.errors] == [
        (1, "include", "expected '= value' or '{' after the name"),
        (2, "include", "missing file pattern"),
        (3, "include", "takes one file pattern (quote it or escape spaces with '\\')"),
        (4, "include", "unknown key at the top level (sections are: authorities, connections, "
         "manual, pools, radius, secrets, tunsec)"),
        (5, "include", "unknown section (known: authorities, connections, manual, pools, radius, secrets, tunsec)"),
    ]  # fmt: skip


def test_unbalanced_braces_do_not_leak_across_include(tmp_path: Path) -> None:
    (tmp_path / "open.conf").write_text("tunsec {\n")
    main = tmp_path / "m.conf"
    main.write_text("include open.conf\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert [str(e) for e in info.value.errors] == [
        f"{main}:2: '}}' without a matching '{{'",
        f"{tmp_path / 'open.conf'}:1: tunsec: section 'tunsec' is never closed (missing '}}')",
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert isinstance(info.value.__cause__, OSError)
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"tunsec {\n}\n\xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert str(info.value) == f"{binary}:3: not valid UTF-8"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_include_of_a_device_is_refused() -> None:
    issue = only_issue("include /dev/zero\n")
    assert issue.message == "'/dev/zero': not a regular file"
