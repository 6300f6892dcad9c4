"""The memory cache of image files keeps at most `image_cache_bytes` bytes, each file at most a quarter of that,
and lets the least recently used go first."""

from __future__ import annotations

from server.images.cache import FileCache, cached_file


def item(size: int):
    return cached_file(b"x" * size, "image/png", 1_700_000_000.0, size)


def kept(cache: FileCache, *keys: str) -> list[str]:
    return [key for key in keys if key in cache._items]


def test_a_file_may_take_a_quarter_of_the_budget_and_no_more():
    cache = FileCache(1000)
    cache.put("quarter", item(250))
    cache.put("more", item(251))
    cache.put("small", item(1))
    assert kept(cache, "quarter", "more", "small") == ["quarter", "small"]
    assert cache.size == 251


def test_the_budget_is_filled_exactly_then_the_least_recently_used_goes():
    cache = FileCache(1000)
    for key, size in (("a", 250), ("b", 250), ("c", 250), ("d", 249), ("e", 1)):
        cache.put(key, item(size))
    assert kept(cache, *"abcde") == list("abcde")  # 1000 bytes: exactly the budget
    assert cache.size == 1000
    assert cache.get("a") is not None  # now the most recently used
    cache.put("f", item(1))
    assert kept(cache, *"abcdef") == list("acdef")  # b was the least recently used
    assert cache.size == 751
    cache.evict("c")
    assert cache.size == 501 and cache.get("c") is None


def test_putting_a_file_again_counts_it_once():
    cache = FileCache(1000)
    cache.put("a", item(200))
    cache.put("a", item(200))
    assert (len(cache), cache.size) == (1, 200)
