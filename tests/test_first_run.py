

def test_readme_links_resolve():
    """The README is read on the forge, outside the docs site (whose links `mkdocs build --strict` checks)."""
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local, "the README links into docs/"
    assert [t for t in local if not (REPO_ROOT / t).exists()] == []
    assert len(README.read_text().splitlines()) <= 200
