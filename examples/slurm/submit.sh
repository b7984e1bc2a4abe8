#!/bin/bash
# Submit the search as a job array, then the retrain of its winner as a job that starts once
# every task of the array has ended (afterany: also after a task ran out of time; what the
# tasks finished is in the store). Run from the folder the studies and logs should go in.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p logs studies
search="$(sbatch --parsable "$here/search.sbatch")"
search="${search%%;*}"  # --parsable prints "id" or "id;cluster"
retrain="$(sbatch --parsable --dependency="afterany:$search" "$here/retrain.sbatch")"
echo "search: array job $search; retrain: job ${retrain%%;*}, after the search ends"
