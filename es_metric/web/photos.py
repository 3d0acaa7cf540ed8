"""Photos whose ref is an image URL, served from the API's own origin.

The page fetches a result's photo with ``X-API-Key``. Redirecting it to the photo's host would
carry the key there (a browser keeps custom headers across a redirect) and fail for a host that
sends no CORS headers. So the server fetches the photo itself, through the workers' guarded
fetcher (SSRF guard, ``ESM_URL_ALLOW``, size limit, timeouts; no header of the request is passed
on), checks the bytes are an image of an allowed format (never serving a host's HTML or script
under this origin), and keeps recent photos in a small cache bounded in bytes.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..config import Settings
from ..images import DecodeLimits, image_format
from ..ingest.fetch import read_ref

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
               "BMP": "image/bmp", "TIFF": "image/tiff"}
HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300",
           "Content-Security-Policy": "default-src 'none'; sandbox"}


@dataclass(frozen=True)
class Photo:
    data: bytes
    media_type: str


class PhotoCache:
    """Least recently used photos by URL: at most ``max_bytes`` in all, each kept ``ttl`` s."""

    def __init__(self, max_bytes: int = 32 << 20, ttl: float = 300.0) -> None:
        self.max_bytes, self.ttl, self.size = max_bytes, ttl, 0
        self._items: OrderedDict[str, tuple[float, Photo]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> Photo | None:
        with self._lock:
            hit = self._items.get(url)
            if hit is None or hit[0] < time.monotonic():
                return None
            self._items.move_to_end(url)
            return hit[1]

    def put(self, url: str, photo: Photo) -> None:
        """Keep ``photo`` (one larger than a quarter of the cache is served, not kept)."""
        if len(photo.data) > self.max_bytes // 4:
            return
        with self._lock:
            old = self._items.pop(url, None)
            self.size -= len(old[1].data) if old else 0
            self._items[url] = (time.monotonic() + self.ttl, photo)
            self.size += len(photo.data)
            while self.size > self.max_bytes:
                _url, (_t, gone) = self._items.popitem(last=False)
                self.size -= len(gone.data)

    def __len__(self) -> int:
        return len(self._items)


def fetch_photo(url: str, settings: Settings, limits: DecodeLimits, cache: PhotoCache) -> Photo:
    """The photo at ``url``, fetched under the settings' URL policy (blocking: run it in a
    search slot); ImageError (a ``url_*`` reason, too_large, not_an_image, ...) otherwise."""
    photo = cache.get(url)
    if photo is None:
        data = read_ref(url, settings, limits)
        photo = Photo(data, MEDIA_TYPES[image_format(data, limits)])
        cache.put(url, photo)
    return photo
