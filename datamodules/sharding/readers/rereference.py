"""Re-referencing conventions of intracranial recordings: bipolar and Laplacian along each shaft.

sEEG/ECoG/DBS contacts are named ``<electrode><number>`` (``LA1, LA2, ...``; ``G1..G64`` on a
grid, ``LFP_RIGHT_0..2`` on a DBS lead): contacts of one electrode share the prefix and are
ordered by the number. ``--reference bipolar`` replaces them by the differences of neighbouring
contacts (``LA1-LA2``, ``LA2-LA3``, ...: MNE's ``set_bipolar_reference``; the new channel is
placed midway between its two contacts); ``--reference laplacian`` subtracts from each contact the
mean of its neighbours on the same electrode (``n-1`` and ``n+1`` where they exist; a contact with
no neighbour is left out). Other channel types (scalp EEG, misc, a target channel) are kept as
they are. Both are recorded in ``preprocessing.reference`` with the pairs or neighbours used.

    raw, record = rereference(raw, "bipolar")
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

INTRACRANIAL = ("seeg", "ecog", "dbs")
SCHEMES = ("bipolar", "laplacian")
_CONTACT = re.compile(r"^(.*?)(\d+)$")


def shafts(names: list[str], types: list[str]) -> dict[str, list[str]]:
    """Intracranial contacts grouped by electrode (name prefix), each ordered by contact number."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for name, kind in zip(names, types, strict=True):
        found = _CONTACT.match(name)
        if kind in INTRACRANIAL and found:
            groups.setdefault(found.group(1), []).append((int(found.group(2)), name))
    return {prefix: [n for _, n in sorted(contacts)] for prefix, contacts in sorted(groups.items())}


def _numbered(names: list[str]) -> list[tuple[int, str]]:
    return [(int(_CONTACT.match(n).group(2)), n) for n in names]  # type: ignore[union-attr]


def bipolar_pairs(names: list[str], types: list[str]) -> list[tuple[str, str]]:
    """(anode, cathode) for consecutive contact numbers on each electrode."""
    pairs = []
    for contacts in shafts(names, types).values():
        numbered = _numbered(contacts)
        pairs += [(a, b) for (i, a), (j, b) in zip(numbered, numbered[1:], strict=False) if j == i + 1]
    return pairs


def rereference(raw: Any, scheme: str) -> tuple[Any, dict[str, Any]]:
    """``raw`` re-referenced by ``scheme`` (a new Raw) and what was done; ValueError when nothing fits."""
    import mne

    names, types = list(raw.ch_names), raw.get_channel_types()
    if scheme == "bipolar":
        pairs = bipolar_pairs(names, types)
        if not pairs:
            raise ValueError("no neighbouring intracranial contacts (names like LA1, LA2) to pair")
        anodes, cathodes = [a for a, _ in pairs], [b for _, b in pairs]
        out = mne.set_bipolar_reference(raw, anodes, cathodes, drop_refs=True, copy=True, verbose="error")
        loc = {ch["ch_name"]: np.asarray(ch["loc"][:3], dtype=float) for ch in raw.info["chs"]}
        for ch in out.info["chs"]:
            if "-" in ch["ch_name"] and tuple(ch["ch_name"].split("-", 1)) in set(pairs):
                a, b = ch["ch_name"].split("-", 1)
                mid = (loc[a] + loc[b]) / 2
                ch["loc"][:3] = mid if np.isfinite(mid).all() else np.nan
        return out, {"scheme": "bipolar", "pairs": [f"{a}-{b}" for a, b in pairs]}
    if scheme == "laplacian":
        neighbours: dict[str, list[str]] = {}
        for contacts in shafts(names, types).values():
            numbered = dict(_numbered(contacts))
            by_number = {n: name for n, name in numbered.items()}
            for n, name in numbered.items():
                near = [by_number[m] for m in (n - 1, n + 1) if m in by_number]
                if near:
                    neighbours[name] = near
        if not neighbours:
            raise ValueError("no intracranial contact has a neighbour on its electrode (names like LA1, LA2)")
        data = raw.get_data()
        index = {n: i for i, n in enumerate(names)}
        new = data.copy()
        for name, near in neighbours.items():
            new[index[name]] = data[index[name]] - data[[index[m] for m in near]].mean(axis=0)
        lone = [n for n, t in zip(names, types, strict=True) if t in INTRACRANIAL and n not in neighbours]
        out = mne.io.RawArray(new, raw.info.copy(), first_samp=raw.first_samp, verbose="error")
        out.set_annotations(raw.annotations)
        if lone:
            out.drop_channels(lone)
        return out, {"scheme": "laplacian", "neighbours": neighbours, "left_out": lone}
    raise ValueError(f"unknown re-referencing scheme {scheme!r}")
