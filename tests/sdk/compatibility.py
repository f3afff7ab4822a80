"""Reads the client checks' JSON lines (stdin), prints them as the compatibility table (client x feature), and
checks that README.md carries the same table between its `<!-- compatibility -->` markers: the README's
table is always what the checks found. Ends with one line `clients: N passed, N failed`.
Usage: compatibility.py README_PATH"""

import json
import pathlib
import sys

rows = [json.loads(line) for line in sys.stdin if line.startswith("{")]
table = ["| client | feature | works |", "|---|---|---|"]
for row in rows:
    works = "yes" if row["ok"] else "no"
    if row["ok"] and row["detail"]:
        works += " (%s)" % row["detail"]
    table.append("| %s | %s | %s |" % (row["client"], row["feature"], works))
    if not row["ok"]:
        print("FAILED %s, %s: %s" % (row["client"], row["feature"], row["detail"]))
table = "\n".join(table)

readme = pathlib.Path(sys.argv[1]).read_text()
start, end = "<!-- compatibility -->\n", "\n<!-- /compatibility -->"
documented = readme.split(start, 1)[1].split(end, 1)[0] if start in readme and end in readme else None
failed = sum(1 for row in rows if not row["ok"])
if documented != table:
    failed += 1
    print("README.md's compatibility table is not what the checks found; it should read:\n" + table)
passed = len(rows) + 1 - failed
print("clients: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed or not rows else 0)
