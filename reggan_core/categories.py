"""The 22 CFEE expression categories and the action units that drive them.

Order, names and the prototypical action units (AUs) follow Du, Tao & Martinez,
"Compound facial expressions of emotion", PNAS 111(15) E1454-E1462 (2014), Table 1:
``aus`` are the AUs active in more than 70% of the 230 subjects; ``variable_aus`` are
the bracketed AUs that only some subjects use (percentages in the paper).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """One expression category of CFEE."""

    index: int          # position in CFEE's order (0 = neutral)
    name: str           # snake_case name used in folders and APIs
    code: str           # short code for tables and figures
    kind: str           # "neutral", "basic" or "compound"
    aus: tuple[int, ...]           # prototypical AUs (PNAS 2014, Table 1)
    variable_aus: tuple[int, ...]  # AUs used by some subjects only (same table, brackets)
    fer_label: str | None = None   # matching FER2013 class, for basic categories

    @property
    def label(self) -> str:
        """Human-readable name ("happily surprised")."""
        return self.name.replace("_", " ")


CATEGORIES: tuple[Category, ...] = (
    Category(0, "neutral", "N", "neutral", (), (), "neutral"),
    Category(1, "happy", "HA", "basic", (12, 25), (6,), "happy"),
    Category(2, "sad", "SA", "basic", (4, 15), (1, 6, 11, 17), "sad"),
    Category(3, "fearful", "FE", "basic", (1, 4, 20, 25), (2, 5, 26), "fear"),
    Category(4, "angry", "AN", "basic", (4, 7, 24), (10, 17, 23), "angry"),
    Category(5, "surprised", "SU", "basic", (1, 2, 25, 26), (5,), "surprise"),
    Category(6, "disgusted", "DI", "basic", (9, 10, 17), (4, 24), "disgust"),
    Category(7, "happily_surprised", "HS", "compound", (1, 2, 12, 25), (5, 26)),
    Category(8, "happily_disgusted", "HD", "compound", (10, 12, 25), (4, 6, 9)),
    Category(9, "sadly_fearful", "SF", "compound", (1, 4, 20, 25), (2, 5, 6, 15)),
    Category(10, "sadly_angry", "SAN", "compound", (4, 15), (6, 7, 11, 17)),
    Category(11, "sadly_surprised", "SS", "compound", (1, 4, 25, 26), (2, 6)),
    Category(12, "sadly_disgusted", "SD", "compound", (4, 10), (1, 6, 9, 11, 15, 17, 25)),
    Category(13, "fearfully_angry", "FA", "compound", (4, 20, 25), (5, 7, 10, 11)),
    Category(14, "fearfully_surprised", "FS", "compound", (1, 2, 5, 20, 25), (4, 10, 11, 26)),
    Category(15, "fearfully_disgusted", "FD", "compound", (1, 4, 10, 20, 25), (2, 5, 6, 9, 15)),
    Category(16, "angrily_surprised", "AS", "compound", (4, 25, 26), (5, 7, 10)),
    Category(17, "angrily_disgusted", "AD", "compound", (4, 10, 17), (7, 9, 24)),
    Category(18, "disgustedly_surprised", "DS", "compound", (1, 2, 5, 10), (4, 9, 17, 24)),
    Category(19, "appalled", "AP", "compound", (4, 10), (6, 9, 17, 24)),
    Category(20, "hatred", "HT", "compound", (4, 10), (7, 9, 17, 24)),
    Category(21, "awed", "AW", "compound", (1, 2, 5, 25), (4, 26)),
)

CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
BASIC_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES if c.kind == "basic")
COMPOUND_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES if c.kind == "compound")
_LOOKUP = {}
for _c in CATEGORIES:
    for _key in (_c.name, _c.code.lower(), _c.label, str(_c.index)):
        _LOOKUP[_key] = _c


def get_category(key: str | int | Category) -> Category:
    """Category by name, short code, label or index; unknown keys list the valid names."""
    if isinstance(key, Category):
        return key
    norm = str(key).strip().lower().replace("-", "_")
    cat = _LOOKUP.get(norm) or _LOOKUP.get(norm.replace(" ", "_"))
    if cat is None:
        raise ValueError(
            f"unknown expression category {key!r}; valid: {', '.join(CATEGORY_NAMES)}"
        )
    return cat
