#!/usr/bin/env bash
# The demo `make demo` runs: list the sample workflows, create a database, run each sample, browse the
# history. Usage: examples/demo.sh BIN_DIR OUT_DIR (BIN_DIR holds wfkit and python; OUT_DIR is made anew).
set -euo pipefail
bin=$1
out=$2
rm -rf "$out"
mkdir -p "$out"
export WFKIT_DATABASE_URL="sqlite:///$(cd "$out" && pwd)/wfkit.db"

echo "== wfkit list-workflows: the sample workflows, found through their plugin's entry point"
"$bin/wfkit" list-workflows
echo; echo "== wfkit graph review-loop: a loop with a named predicate, as mermaid"
"$bin/wfkit" graph review-loop
echo; echo "== wfkit db upgrade: create the database (a SQLite file) and its tables"
"$bin/wfkit" db upgrade
echo; echo "== wfkit run: each sample, printing stages and decisions as they happen"
"$bin/wfkit" run text-pipeline -p "text=the cat saw the other cat"; echo
"$bin/wfkit" run branching -p priority=express; echo
"$bin/wfkit" run review-loop -p threshold=0.75 --json > "$out/review-loop.json"
id=$("$bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$out/review-loop.json")
echo; echo "== wfkit runs list: the history"
"$bin/wfkit" runs list
echo; echo "== wfkit runs stages / decisions: what the review loop did"
"$bin/wfkit" runs stages "$id"; echo
"$bin/wfkit" runs decisions "$id"
echo
echo "The demo database is $out/wfkit.db; browse it with: export WFKIT_DATABASE_URL=$WFKIT_DATABASE_URL"
