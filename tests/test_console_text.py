"""What the console prints is the text it was given: rich's emoji codes (":fire:") are not
replaced, so a name, path or server text in a plan reads as it is."""

import shutil

import pytest

from conftest import EXAMPLE


@pytest.mark.parametrize("colour", [[], ["--no-color"]], ids=["colour", "no-color"])
def test_emoji_codes_in_names_print_as_written(cli, tmp_path, colour):
    source = tmp_path / "ops:fire:team.toml"
    shutil.copyfile(EXAMPLE, source)
    code, out, _ = cli(*colour, "plan", source.name)
    assert code == 0
    assert "ops:fire:team.toml" in out
    assert "\N{FIRE}" not in out


def test_emoji_codes_are_kept_in_a_plan_written_with_output(cli, tmp_path):
    source = tmp_path / "ops:smile:team.toml"
    shutil.copyfile(EXAMPLE, source)
    code, _, _ = cli("plan", source.name, "-o", "plan.txt")
    assert code == 0
    text = (tmp_path / "plan.txt").read_text(encoding="utf-8")
    assert "ops:smile:team.toml" in text
