import git
import pytest

from distill_assets.config import MiningConfig, RepoSource
from distill_assets.mining.globs import GlobSet
from distill_assets.mining.miner import MiningError, mine_repository, open_repository


def mine(repo_path, tmp_path, **src):
    source = RepoSource(name="shop", path=repo_path, **src)
    repo = open_repository(source, tmp_path / "cache")
    return mine_repository(repo, source, MiningConfig())


def by_subject(result):
    return {c.subject: c for c in result.commits}


def test_every_commit_is_kept_or_dropped_with_its_reason(shop_repo, tmp_path):
    res = mine(shop_repo.path, tmp_path)
    c = by_subject(res)
    assert len(res.commits) == 12  # nothing is lost: dropped commits stay in the table
    assert c["initial import"].drop_reason == "root_commit"
    assert c["Add discount to gross()"].kept
    assert c["Add discount to gross()"].test_files == 1
    assert c["Reformat"].drop_reason == "formatting_only"
    assert c["Bump deps"].drop_reason == "only_noise_files"
    assert c["Add logo"].drop_reason == "only_noise_files"
    assert c["Tweak readme"].drop_reason == "too_few_files"
    assert c["Merge branch 'feature'"].drop_reason == "merge"
    assert c["Add Cart.clear and use it in checkout"].kept  # reachable through the merge
    assert c["Document checkout"].drop_reason == "docs_only"  # README + docs: two files, documentation only
    assert c["Generate fixtures"].drop_reason == "too_many_files"
    assert c["Remove checkout module; Cart.checkout replaces it"].kept
    counts = res.drop_counts()
    assert counts["merge"] == 1 and counts["formatting_only"] == 1 and counts["only_noise_files"] == 2
    assert counts["docs_only"] == 1
    assert sum(counts.values()) + len(res.kept) == len(res.commits)


def test_file_details_renames_deletions_binary(shop_repo, tmp_path):
    c = by_subject(mine(shop_repo.path, tmp_path))
    rename = {f.path: f for f in c["Rename format.js to money.js and add currency"].files}
    assert rename["web/money.js"].status == "R" and rename["web/money.js"].old_path == "web/format.js"
    assert rename["web/test/view.test.js"].category == "test"
    assert rename["web/view.js"].status == "A"
    logo = {f.path: f for f in c["Add logo"].files}
    assert logo["web/logo.png"].binary and logo["web/logo.png"].additions is None
    assert logo["yarn.lock"].category == "lockfile"
    deleted = {f.path: f for f in c["Remove checkout module; Cart.checkout replaces it"].files}
    assert deleted["shop/checkout.py"].status == "D" and deleted["shop/checkout.py"].deletions == 7
    bump = {f.path: f.category for f in c["Bump deps"].files}
    assert bump == {"web/package-lock.json": "lockfile", "vendor/lib.js": "vendored"}


def test_size_bounds_and_min_files_are_configurable(shop_repo, tmp_path):
    source = RepoSource(name="shop", path=shop_repo.path)
    repo = open_repository(source, tmp_path)
    res = mine_repository(repo, source, MiningConfig(min_files=3, max_changed_lines=15))
    c = by_subject(res)
    assert c["Document checkout"].drop_reason == "too_few_files"
    assert c["Add discount to gross()"].drop_reason == "too_large"  # 18 changed lines
    assert c["Rename format.js to money.js and add currency"].kept


def test_exclude_globs_turn_files_into_noise(shop_repo, tmp_path):
    c = by_subject(mine(shop_repo.path, tmp_path, exclude=["docs/**", "README.md"]))
    assert c["Document checkout"].drop_reason == "only_noise_files"


def test_branch_and_max_commits(shop_repo, tmp_path):
    res = mine(shop_repo.path, tmp_path, branch="feature")
    assert "Merge branch 'feature'" not in by_subject(res)
    res = mine(shop_repo.path, tmp_path, max_commits=3)
    assert len(res.commits) == 3


def test_url_sources_are_cloned_and_updated(shop_repo, tmp_path):
    bundle = tmp_path / "shop.bundle"
    shop_repo.git("bundle", "create", str(bundle), "--all")
    source = RepoSource(name="shop", url=str(bundle), branch="main")
    repo = open_repository(source, tmp_path / "cache")
    assert (tmp_path / "cache" / "repos" / "shop.git" / "HEAD").exists()
    first = mine_repository(repo, source, MiningConfig())
    shop_repo.commit(
        "Add net() doc and test",
        {
            "shop/pricing.py": "TAX = 0.25\n\n\ndef net(price, discount=0.0):\n    return price * (1 - discount)\n\n\ndef gross(price, discount=0.0):\n    return net(price, discount) * (1 + TAX)\n",
            "tests/test_pricing.py": "import unittest\n\nfrom shop.pricing import gross\n\n\nclass T(unittest.TestCase):\n    def test_gross(self):\n        self.assertAlmostEqual(gross(4), 5.0)\n",
        },
    )
    shop_repo.git("bundle", "create", str(bundle), "--all")
    again = mine_repository(open_repository(source, tmp_path / "cache"), source, MiningConfig())
    assert len(again.commits) == len(first.commits) + 1


@pytest.mark.parametrize("case", ["missing", "not_git", "empty", "bad_branch", "bad_url", "unreachable"])
def test_bad_repositories_give_one_clear_message(case, tmp_path, shop_repo):
    kwargs = {"name": "x"}
    if case == "missing":
        kwargs["path"] = tmp_path / "nope"
        expect = "path does not exist"
    elif case == "not_git":
        (tmp_path / "plain").mkdir()
        kwargs["path"] = tmp_path / "plain"
        expect = "not a git repository"
    elif case == "empty":
        git.Repo.init(tmp_path / "empty")
        kwargs["path"] = tmp_path / "empty"
        expect = "has no commits"
    elif case == "bad_branch":
        kwargs.update(path=shop_repo.path, branch="nope")
        expect = "branch or ref 'nope' not found"
    elif case == "bad_url":
        kwargs["url"] = str(tmp_path / "missing.bundle")
        expect = "could not clone"
    else:
        kwargs["url"] = "http://127.0.0.1:9/nope.git"  # nothing listens on the discard port
        expect = "could not clone http://127.0.0.1:9/nope.git"
    source = RepoSource(**kwargs)
    with pytest.raises(MiningError, match=expect):
        repo = open_repository(source, tmp_path / "cache")
        mine_repository(repo, source, MiningConfig())
    # nothing half-written: a failed clone leaves no cache entry behind
    assert not (tmp_path / "cache" / "repos" / "x.git").exists()
    assert not (tmp_path / "cache" / "repos" / "x.git.partial").exists()


def test_globset():
    g = GlobSet(["vendor/**", "**/*.min.js", "package-lock.json", "src/*/gen_?.py"])
    assert g.matches("vendor/a/b.js")
    assert g.matches("web/app.min.js") and g.matches("app.min.js")
    assert g.matches("web/package-lock.json")
    assert g.matches("src/x/gen_1.py") and not g.matches("src/x/y/gen_1.py")
    assert not g.matches("src/vendor.py")


def test_a_repository_git_refuses_is_one_clear_error(git_repo, tmp_path):
    """git refuses a repository another user owns ("dubious ownership"): one MiningError, not a GitCommandError."""
    import os

    import pytest

    from distill_assets.mining.miner import MiningError

    if os.geteuid() != 0:
        pytest.skip("needs root to hand the repository to another user")
    git_repo.commit("init", {"a.py": "x = 1\n"})
    for root, dirs, files in os.walk(git_repo.path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), 65534, 65534)
    os.chown(git_repo.path, 65534, 65534)
    source = RepoSource(name="theirs", path=git_repo.path)
    with pytest.raises(
        MiningError, match="repository .theirs.: git refuses to read .*dubious ownership.*safe.directory"
    ):
        mine_repository(open_repository(source, tmp_path), source, MiningConfig())
