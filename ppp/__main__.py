"""``python -m ppp``: print the version and the active backend."""

from __future__ import annotations

import ppp


def main() -> None:
    print(f"ppp {ppp.__version__} backend={ppp.BACKEND} ({ppp.Pool.__module__})")


if __name__ == "__main__":
    main()
