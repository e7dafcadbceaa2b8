"""`multipl-moe report`: pass@k tables, a JSON summary and a chart; several folders compared."""

from __future__ import annotations

import argparse
from pathlib import Path

from multipl_moe.errors import UserError

DESCRIPTION = """\
Score MultiPL-E results folders (NAME.results.json[.gz], searched recursively) with the unbiased
pass@k estimator, averaged over problems. With one folder: prints a table per benchmark x
language and writes summary.json, passk.md and passk.png into it (or --out). With two or more:
prints them side by side (pass@k of each, and the difference for two) and, with --out, writes
compare.md and compare.png there. Languages that could not run are shown as unavailable, never 0.
CodeBLEU from `multipl-moe xlcost` runs in the same folders is shown beside pass@k.

Each result folder is one model: a folder that holds several (the top of an `eval` or `execute`
run each; e.g. `runs/demo`) is compared model by model, never merged into one table. Only files
of report's own names that report wrote are replaced; anything else stops the command first.
"""


def run(args: argparse.Namespace) -> int:
    from multipl_moe.evaluation import formats, report

    try:
        ks = tuple(int(k) for k in args.k.split(","))
    except ValueError as e:
        raise UserError(f"--k takes comma-separated integers, got {args.k!r}") from e
    from multipl_moe.evaluation.report_targets import check_writable, expand, footer

    for d in args.dirs:
        if not d.is_dir():
            raise UserError(f"{d} is not a directory")
    dirs, notes = expand(args.dirs)   # one model per result folder, never several merged
    for note in notes:
        print(f"note: {note}")
    if len(dirs) > 1 and args.out:
        check_writable(args.out, ("compare.md", "compare.png"))
    runs = []
    for d in dirs:
        run_ = report.collect(d)
        if not run_.cells and not run_.unavailable and not report.read_scores(d):
            raise UserError(f"no MultiPL-E results or completion files in {d}")
        runs.append(run_)
    if len(runs) == 1:
        print(report.table(runs[0], ks))
        paths = report.write_report(runs[0], args.out or dirs[0], ks)
        print(f"wrote {paths['summary']}, {paths['table']}, {paths['chart']}")
        return 0
    text = report.compare_table(runs, ks[0])
    if report.compare_codebleu(runs):
        text += "\n\nCodeBLEU (text-to-code)\n\n" + report.compare_codebleu(runs)
    print(text)
    if args.out:
        formats.write_bytes_atomic(args.out / "compare.md", (text + "\n" + footer()).encode())
        chart = report.plot(runs, args.out / "compare.png", k=ks[0])
        print(f"wrote {args.out / 'compare.md'}, {chart}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="pass@k tables and charts; compare result folders",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", type=Path, nargs="+", metavar="RESULTS_DIR")
    p.add_argument("--k", default="1,10,100",
                   help="k values for pass@k (default %(default)s; a k larger than the number "
                        "of samples is shown as '-'); the first one is charted and compared")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the files (default: the folder itself for one folder; "
                        "nothing but the printed table for several)")
    p.set_defaults(func=run)
