"""The recent-pictures store: lookups by message, user and group; bounded by count and bytes."""

from __future__ import annotations

from nonebot_plugin_llm2pic.recent import RecentPicture, RecentPictures


def picture(
    message_id: str,
    *,
    group: str | None = "1",
    user: str = "u",
    size: int = 10,
    created: float = 1000.0,
    prompt: str = "a cat",
) -> RecentPicture:
    return RecentPicture(
        message_id=message_id,
        group_id=group,
        user_id=user,
        prompt=prompt,
        style=None,
        backend="openai",
        seed=None,
        image=b"x" * size,
        mime="image/png",
        references=(),
        request_text="画一只猫",
        created=created,
    )


def prompt_of(picture: RecentPicture | None) -> str | None:
    return picture.prompt if picture is not None else None


def test_by_message_finds_the_group_picture() -> None:
    """A message id is looked up within its group only."""
    store = RecentPictures()
    store.add(picture("7", group="1", prompt="one"))
    store.add(picture("7", group="2", prompt="two"))
    assert prompt_of(store.by_message("2", "7")) == "two"
    assert store.by_message("3", "7") is None


def test_by_message_returns_the_first_of_a_multi_picture_message() -> None:
    """Several pictures sent in one message: the first one answers for it."""
    store = RecentPictures()
    store.add(picture("7", prompt="first"))
    store.add(picture("7", prompt="second"))
    assert prompt_of(store.by_message("1", "7")) == "first"


def test_last_by_user_respects_the_window() -> None:
    """The user's newest picture counts only within the given seconds."""
    store = RecentPictures()
    store.add(picture("1", user="a", created=100.0, prompt="old"))
    store.add(picture("2", user="b", created=1000.0))
    assert prompt_of(store.last_by_user("1", "a", within_seconds=1800, now=1000.0)) == "old"
    assert store.last_by_user("1", "a", within_seconds=60, now=1000.0) is None


def test_last_in_group_is_the_newest() -> None:
    """The group's last picture is the one added last there."""
    store = RecentPictures()
    store.add(picture("1", prompt="a"))
    store.add(picture("2", prompt="b"))
    store.add(picture("3", group="9", prompt="c"))
    assert prompt_of(store.last_in_group("1")) == "b"
    assert store.last_in_group("5") is None


def test_count_per_group_is_bounded() -> None:
    """Beyond max_per_group the group's oldest pictures go; other groups keep theirs."""
    store = RecentPictures(max_per_group=2)
    store.add(picture("other", group="2"))
    for message_id in ("1", "2", "3"):
        store.add(picture(message_id))
    assert store.by_message("1", "1") is None
    assert store.by_message("1", "3") is not None
    assert store.by_message("2", "other") is not None


def test_bytes_are_bounded() -> None:
    """Beyond max_bytes the oldest pictures go, whatever their group."""
    store = RecentPictures(max_bytes=25)
    store.add(picture("1", group="1", size=10))
    store.add(picture("2", group="2", size=10))
    store.add(picture("3", group="3", size=10))
    assert len(store) == 2
    assert store.by_message("1", "1") is None
