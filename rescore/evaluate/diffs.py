"""The per-utterance view of a run: each stage's text against the reference, and what the corrector did.

A WER table says a stage made 13 utterances worse; this says which, and how: the reference, every stage's
text with its word diff against the reference (or against the first pass where there is no reference), the
corrector's proposal and why it was taken or not. ``report.html`` shows it filterable to the utterances a
stage made worse.
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from rescore.evaluate.metrics import edit_counts, normalize
from rescore.records import NBest

NORMALIZER = "whisper"  # the reports' normalizer (report.py scores with it too)
STAGE_TEXT = {"transcribe": "first-pass", "rerank": "rerank", "correct": "correct"}


def stage_text(record: NBest, stage: str) -> str:
    """A record's text as the named stage left it (another stage, e.g. deep fusion: the latest text)."""
    return record.text(STAGE_TEXT.get(stage, "auto"))


@dataclass
class StageText:
    stage: str
    text: str
    errors: int | None  # word errors against the reference (None: no reference)
    worse: bool = False  # more errors than the previous stage
    better: bool = False


@dataclass
class UtteranceRow:
    id: str
    reference: str | None
    stages: list[StageText] = field(default_factory=list)
    proposal: str | None = None  # what the corrector wrote (cleaned), taken or not
    verdict: str | None = None  # why it was taken or not


def utterance_rows(stages: Sequence[tuple[str, Sequence[NBest]]]) -> list[UtteranceRow]:
    """One row per utterance every stage processed, in the first stage's order (deep-fusion stages left out)."""
    stages = [(s, {r.id: r for r in recs}) for s, recs in stages if s in STAGE_TEXT]
    if not stages:
        return []
    first = stages[0][1]
    rows = []
    for uid, r0 in first.items():
        if not r0.ok or not all(uid in m and m[uid].ok for _, m in stages):
            continue
        row = UtteranceRow(uid, r0.reference)
        ref = normalize(r0.reference, NORMALIZER) if r0.reference is not None else None
        prev: int | None = None
        for stage, m in stages:
            text = stage_text(m[uid], stage)
            errs = None if ref is None else int(edit_counts([ref], [normalize(text, NORMALIZER)]).errors.sum())
            st = StageText(stage, text, errs)
            if errs is not None and prev is not None:
                st.worse, st.better = errs > prev, errs < prev
            prev = errs
            row.stages.append(st)
            c = m[uid].correction
            if stage == "correct" and isinstance(c, dict) and "cleaned" in c:
                row.proposal = c["cleaned"]
                row.verdict = ("taken: " if c.get("accepted") else "not taken: ") + str(c.get("reason", ""))
        rows.append(row)
    return rows


def word_diff(reference: str, text: str) -> str:
    """HTML: the text's words against the reference's (normalized), deletions struck, insertions marked."""
    a, b = normalize(reference, NORMALIZER).split(), normalize(text, NORMALIZER).split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{html.escape(' '.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{html.escape(' '.join(b[j1:j2]))}</ins>")
    return " ".join(out)


CSS = """del{background:#fdd;text-decoration:line-through}ins{background:#dfd;text-decoration:none}
#utts td{text-align:left;vertical-align:top}#utts tr.worse td.stage-worse{background:#fee}"""

SCRIPT = """<script>
function filterUtts(v){for(const tr of document.querySelectorAll('#utts tbody tr')){
tr.style.display=(v==='all'||tr.dataset.worse.split(' ').includes(v))?'':'none';}}
</script>"""


def render_rows(rows: Sequence[UtteranceRow]) -> str:
    """The HTML section: a filter (all, or the utterances a stage made worse) and the table."""
    if not rows:
        return ""
    names = [s.stage for s in rows[0].stages]
    counts = {n: sum(1 for r in rows for s in r.stages if s.stage == n and s.worse) for n in names[1:]}
    options = "".join(
        f"<option value='{html.escape(n)}'>made worse by {html.escape(n)} ({counts[n]})</option>" for n in names[1:]
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["id", "reference", *names, "corrector's proposal"])
    body = []
    for r in rows:
        worse = " ".join(s.stage for s in r.stages if s.worse)
        cells = [f"<td>{html.escape(r.id)}</td>", f"<td>{html.escape(r.reference or '')}</td>"]
        for s in r.stages:
            diff = word_diff(r.reference, s.text) if r.reference is not None else html.escape(s.text)
            errs = f" <small>({s.errors} err)</small>" if s.errors is not None else ""
            cls = " class='stage-worse'" if s.worse else ""
            cells.append(f"<td{cls}>{diff}{errs}</td>")
        proposal = f"{html.escape(r.proposal)}<br><small>{html.escape(r.verdict or '')}</small>" if r.proposal else ""
        cells.append(f"<td>{proposal}</td>")
        body.append(f"<tr class='{'worse' if worse else ''}' data-worse='{html.escape(worse)}'>{''.join(cells)}</tr>")
    return (
        f"<h3>Per utterance</h3><style>{CSS}</style>{SCRIPT}<p class='note'>Word diff against the reference (Whisper "
        "normalizer): <del>missing</del> <ins>inserted</ins>; a red cell: more errors than the previous stage. "
        f"Show <select onchange='filterUtts(this.value)'><option value='all'>all ({len(rows)})</option>{options}"
        f"</select></p><table id='utts'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
