"""What can go wrong with an image or board request; `server/http/errors.py` and the routes map these to HTTP."""

from __future__ import annotations


class ImageNotFound(LookupError):
    """No image by that name: never issued, or deleted."""

    def __init__(self, image_name: str) -> None:
        super().__init__(image_name)
        self.image_name = image_name


class BoardNotFound(LookupError):
    def __init__(self, board_id: str) -> None:
        super().__init__(board_id)
        self.board_id = board_id


class UnknownBoard(ValueError):
    """A request names a board that does not exist."""

    def __init__(self, board_id: str) -> None:
        super().__init__(f"No board with id {board_id!r}; create it first or leave board_id out")
        self.board_id = board_id


class UnknownImage(ValueError):
    """A board change names an image that does not exist."""

    def __init__(self, image_name: str) -> None:
        super().__init__(f"No image named {image_name!r}")
        self.image_name = image_name


class AttemptLost(RuntimeError):
    """A session's image came from a try that no longer holds the session (its lease ran out and another worker
    may be running it): the image is not published."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} is no longer this worker's; its image was not kept")
        self.session_id = session_id
