"""The paper's claims (sections 7.1-7.3 and 8.1-8.2) tested on our data, and the paper tested against itself.

Each claim is a ``Claim``: the paper's sentence (with its section), the paper's number, the models it
names, how our data decides it and how the paper's own tables (``paper_tables.csv``: Tables 4-8 and
the numbers of the text, cited by table or section) bear on it. ``claims_table`` gives one row per
claim: paper, ours, evidence, verdict, reason, the models' input size and training budget against
Table 3, and ``paper_consistent`` with its ``paper_check``.

Numbers. A view-averaged number (as Tables 4-7 report) is the mean over viewpoints of the mean over
seeds. Its 95% interval comes from resampling test underbodies jointly across viewpoints (cluster =
underbody, ``evaluate.cluster_resamples``), thresholds held fixed at each cell's operating point:
threshold-free metrics (AUROC, AU-PR, AUPRO) from the stored replicates, the others (precision,
recall, F1, IoU, FP share) from per-image counts. A change of error counts with masking is the ratio
of counts pooled over exactly what the claim pools (seeds, views, models), never a mean of ratios.

Only the paper's models take part: our per-pixel Gaussian baseline (``NOT_IN_PAPER``) is a floor that
appears in the per-model tables of notebooks 08-09 and in no pooled number, test family or claim.

Verdict rules, applied in this order:
1. **not run in this profile**: the claim names a model this run did not train.
2. **not decidable here**, with its reason, when
   (a) the verdict rests on a variant whose image-AUROC 95% interval contains 0.5, on the view
       average or in any viewpoint (a model at chance flags images by its threshold rule, not by
       what it sees);
   (b) a speed claim was timed on other hardware or at input sizes other than Table 3's;
   (c) more than ``UNDEFINED_LIMIT`` of the resamples leave the number undefined (a zero
       denominator), or the point estimate falls outside its own interval;
   (d) there are no intervals (``n_resamples = 0``);
   (e) the run is a dry run (``Profile.dry_run``: token budgets and random backbones).
3. Otherwise:
   - a comparison ("A beats B in every view"): **reproduced** when every test has the claimed sign and
     p_BH < 0.05; **contradicted** when any is significant the other way; **inconclusive** otherwise.
   - a size ("masking lowers FN by 33.9 %"): the interval decides: **contradicted** when it excludes
     the paper's value, **reproduced** when it holds it and excludes zero, **inconclusive** otherwise.
   - a ranking ("X is best at ..."): **reproduced** when X leads and the interval of its lead over the
     runner-up excludes zero; **contradicted** when another model leads X with such an interval;
     **inconclusive** otherwise. A ranking rests on the two variants it compares.
   - a direction ("masking raises ..."): **reproduced** / **contradicted** when the interval of the
     difference lies above / below zero.
"""

from lib.evaluate.claims.catalogue import CLAIMS, COLUMNS, claims_table, findings
from lib.evaluate.claims.evidence import Evidence, count_change, from_counts, interval, masking_error_change
from lib.evaluate.claims.paper import NOT_IN_PAPER, PAPER_NAMES, paper_value, read_paper_tables
from lib.evaluate.claims.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_DECIDABLE,
    NOT_RUN,
    REPRODUCED,
    UNDEFINED_LIMIT,
    VERDICTS,
    Claim,
    verdict_comparisons,
    verdict_direction,
    verdict_size,
)

__all__ = [
    "CLAIMS",
    "COLUMNS",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "NOT_DECIDABLE",
    "NOT_IN_PAPER",
    "NOT_RUN",
    "PAPER_NAMES",
    "REPRODUCED",
    "UNDEFINED_LIMIT",
    "VERDICTS",
    "Claim",
    "Evidence",
    "claims_table",
    "findings",
    "count_change",
    "from_counts",
    "interval",
    "masking_error_change",
    "paper_value",
    "read_paper_tables",
    "verdict_comparisons",
    "verdict_direction",
    "verdict_size",
]
