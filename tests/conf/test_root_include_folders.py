"""As root, the folders an include glob looks in are checked as its files are, even empty (review revconf F1):
the folder its fixed part names (or, not made yet, the folder that would hold it) and each folder a wildcard
on the way matches.  Another user who may add a file there would have it included at the next reload.  A glob
that matches nothing in a folder only root may change still passes.  And a configuration read from a pipe is
recorded as such (Config.not_regular): a reload cannot read it again (revconf F3)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest
from reachable import scratch_dir
from revconf_data import manual_tunnel

from tunsec.conf.config import ConfigRefused, load_config

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, the root check)")
OTHER = "nobody"


@pytest.fixture
def etc() -> Iterator[Path]:
    with scratch_dir("fixconf-") as d:   # root's, 0755, under sticky /tmp: only root may change it
        yield d


def conf_with(etc: Path, include: str) -> Path:
    conf = etc / "tunsec.conf"
    conf.write_text(manual_tunnel("good") + f"include {include}\n")
    conf.chmod(0o600)
    return conf


@root
@pytest.mark.parametrize("made", [True, False])
def test_a_glob_matching_nothing_in_a_root_folder_passes(etc: Path, made: bool) -> None:
    if made:
        (etc / "conf.d").mkdir()
    assert [t.name for t in load_config(conf_with(etc, "conf.d/*.conf"), root_check=True).manual] == ["good"]


@root
def test_a_glob_folder_not_made_yet_where_others_may_make_it_is_refused(etc: Path) -> None:
    """A sticky folder every user may add to (as /tmp): anyone may make drop.d there, then fill it."""
    sticky = etc / "spool"
    sticky.mkdir()
    sticky.chmod(0o1777)
    with pytest.raises(ConfigRefused) as caught:
        load_config(conf_with(etc, f"{sticky}/drop.d/*.conf"), root_check=True)
    text = str(caught.value)
    assert f"refusing include folder {sticky}" in text and "is writable by others" in text, text
    assert f"chmod go-w {sticky}" in text, text


@root
def test_a_folder_a_wildcard_matches_on_the_way_is_checked(etc: Path) -> None:
    sites = etc / "sites"
    sites.mkdir()
    (sites / "a").mkdir()
    (sites / "b").mkdir()
    nobody = pwd.getpwnam(OTHER)
    os.chown(sites / "b", nobody.pw_uid, nobody.pw_gid)   # empty, another user's
    with pytest.raises(ConfigRefused, match=f"refusing include folder {sites / 'b'} .*is owned by {OTHER}"):
        load_config(conf_with(etc, "sites/*/tunsec.conf"), root_check=True)
    load_config(conf_with(etc, "sites/a/*.conf"), root_check=True)   # b is not on this one's way


def test_glob_folders_are_the_fixed_part_and_each_wildcard_match(tmp_path: Path) -> None:
    from tunsec.conf.filecheck import glob_folders  # here: the other tests of this file run on main too

    (tmp_path / "a" / "x" / "b").mkdir(parents=True)
    (tmp_path / "a" / "y").mkdir()
    (tmp_path / "a" / "f").write_text("")
    assert glob_folders(f"{tmp_path}/a/*/b/*.conf") == [f"{tmp_path}/a", f"{tmp_path}/a/x", f"{tmp_path}/a/y",
                                                         f"{tmp_path}/a/x/b"]
    assert glob_folders(f"{tmp_path}/conf.d/*.conf") == [f"{tmp_path}/conf.d"]
    assert glob_folders("*.conf") == ["."]


@pytest.mark.parametrize("root_check", [False, True])
def test_a_configuration_read_from_a_pipe_is_recorded_as_one(tmp_path: Path, root_check: bool) -> None:
    conf = tmp_path / "tunsec.conf"
    conf.write_text(manual_tunnel("good"))
    assert load_config(conf, root_check=root_check).not_regular == ""
    r, w = os.pipe()
    try:
        os.write(w, manual_tunnel("good").encode())
        os.close(w)
        cfg = load_config(f"/proc/self/fd/{r}", root_check=root_check)
    finally:
        os.close(r)
    assert [t.name for t in cfg.manual] == ["good"] and cfg.not_regular == "a pipe"
