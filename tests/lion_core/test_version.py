from lion_core import version


def test_image_tag_is_the_code_version_in_a_tags_characters():
    assert version.image_tag("0.1.0+g0ff93ca6ba18") == "0.1.0-g0ff93ca6ba18"
    assert version.image_tag("0.1.0+g0ff93ca6ba18.dirty") == "0.1.0-g0ff93ca6ba18-dirty"
    assert version.image_tag("0+unknown") == "0-unknown"
    import re

    here = version.image_tag()  # this checkout's: the package version, then the commit
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", here) and here.startswith(version.code_version().split("+")[0])


def test_an_image_without_git_reports_the_version_it_was_built_from(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    monkeypatch.setenv(version.IMAGE_VERSION_ENV, "0.1.0+g0123456789ab")
    version.code_version.cache_clear()
    try:
        assert version.code_version() == "0.1.0+g0123456789ab"
    finally:
        version.code_version.cache_clear()
