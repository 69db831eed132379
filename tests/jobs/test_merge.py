"""``jobs.merge``: a run's changes applied on top of what another writer saved meanwhile,
with no update lost on either side."""

from __future__ import annotations

from jobs.merge import _REMOVED, apply, diff, merge


def test_diff_of_equal_documents_is_empty():
    assert diff({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": [1, 2]}}) == []


def test_diff_names_added_changed_and_removed_paths():
    base = {"title": "Hat", "price": 10, "tags": ["a"], "meta": {"x": 1, "y": 2}}
    new = {"title": "Red hat", "price": 10, "meta": {"x": 1, "z": 3}, "slug": "red-hat"}
    assert sorted(diff(base, new), key=lambda change: change[0]) == [
        (("meta", "y"), _REMOVED),
        (("meta", "z"), 3),
        (("slug",), "red-hat"),
        (("tags",), _REMOVED),
        (("title",), "Red hat"),
    ]


def test_diff_replaces_a_value_that_changes_type_or_a_list_whole():
    assert diff({"a": {"b": 1}}, {"a": "flat"}) == [(("a",), "flat")]
    assert diff({"a": [1, 2]}, {"a": [1, 3]}) == [(("a",), [1, 3])]


def test_diff_of_two_scalars_at_the_root():
    assert diff(1, 2) == [((), 2)]
    assert diff("same", "same") == []


def test_apply_sets_nested_paths_and_creates_missing_parents():
    data = {"a": 1}
    result = apply(data, [(("meta", "seo", "title"), "Hat"), (("a",), 2)])
    assert result == {"a": 2, "meta": {"seo": {"title": "Hat"}}}
    assert data == {"a": 1}  # the input is left alone


def test_apply_replaces_a_scalar_parent_with_an_object():
    assert apply({"meta": "old"}, [(("meta", "x"), 1)]) == {"meta": {"x": 1}}


def test_apply_removes_paths_and_ignores_already_missing_ones():
    data = {"a": 1, "b": {"c": 2, "d": 3}}
    assert apply(data, [(("b", "c"), _REMOVED), (("gone",), _REMOVED)]) == {"a": 1, "b": {"d": 3}}


def test_apply_copies_values_so_later_edits_do_not_leak_in():
    value = {"nested": [1]}
    result = apply({}, [(("v",), value)])
    value["nested"].append(2)
    assert result == {"v": {"nested": [1]}}


def test_apply_at_the_root_replaces_the_document_only_with_an_object():
    assert apply({"a": 1}, [((), {"b": 2})]) == {"b": 2}
    assert apply({"a": 1}, [((), "not an object")]) == {"a": 1}


def test_merge_keeps_both_writers_changes_on_different_paths():
    base = {"title": "Hat", "price": 10, "meta": {"views": 1}}
    ours = {"title": "Hat", "price": 10, "meta": {"views": 1}, "slug": "hat"}  # the run
    theirs = {"title": "Hat", "price": 12, "meta": {"views": 5}}  # a PATCH meanwhile
    assert merge(base, ours, theirs) == {
        "title": "Hat",
        "price": 12,
        "meta": {"views": 5},
        "slug": "hat",
    }


def test_merge_keeps_their_sibling_keys_inside_an_object_we_changed():
    base = {"meta": {"a": 1}}
    ours = {"meta": {"a": 2}}
    theirs = {"meta": {"a": 1, "b": 9}}
    assert merge(base, ours, theirs) == {"meta": {"a": 2, "b": 9}}


def test_merge_the_run_wins_where_both_changed_the_same_path():
    base = {"title": "Hat"}
    assert merge(base, {"title": "Run's"}, {"title": "Theirs"}) == {"title": "Run's"}


def test_merge_our_deletion_applies_and_their_deletion_stays():
    base = {"a": 1, "b": 2, "c": 3}
    ours = {"b": 2, "c": 3}  # the run removed a
    theirs = {"a": 1, "b": 2}  # the other writer removed c
    assert merge(base, ours, theirs) == {"b": 2}


def test_merge_with_no_change_of_ours_is_theirs():
    base = {"a": 1}
    theirs = {"a": 1, "b": 2}
    assert merge(base, dict(base), theirs) == theirs
    assert merge(base, dict(base), theirs) is not theirs
