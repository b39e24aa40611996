#!/bin/bash
# Back to back: TinySTM's `micro` and stm-core's `overhead` bench (its three stm-core rows),
# PAIRS alternating pairs, then the median of each row over the pairs (docs/performance.md).
# Usage: benches/tinystm/ab.sh PATH/TO/TINYSTM/micro [PAIRS]
set -e
MICRO=${1:?path to TinySTM micro}; PAIRS=${2:-5}; REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
cargo bench -q -p stm-benches --bench overhead --no-run >/dev/null 2>&1
out=/tmp/ab-tiny.$$; : > $out
for i in $(seq 1 $PAIRS); do
  "$MICRO" 10000000 3 | grep ' median ' | sed "s/^/tiny $i /" >> $out
  rm -rf target/criterion/read_only_1/stm-core target/criterion/read_write_1/stm-core target/criterion/read10_write1/stm-core
  cargo bench -q -p stm-benches --bench overhead -- '^(read_only_1|read_write_1|read10_write1)/stm-core$' \
      --warm-up-time 1 --measurement-time 3 --noplot >/dev/null 2>&1
  for g in read_only_1 read_write_1 read10_write1; do
    python3 -c "import json;print('ours $i $g %.2f' % json.load(open('target/criterion/$g/stm-core/new/estimates.json'))['median']['point_estimate'])" >> $out
  done
done
cat $out
python3 - $out <<'PY'
import sys,statistics,re,collections
d=collections.defaultdict(list)
for l in open(sys.argv[1]):
    p=l.split()
    if p[0]=='ours': d['ours '+p[2]].append(float(p[3]))
    else:
        m=re.search(r'^tiny \d+ (\S+)\s.*median\s+([\d.]+) ns',l)
        if m: d['tiny '+m.group(1)].append(float(m.group(2)))
for k,v in sorted(d.items()): print(f"{k:28s} median {statistics.median(v):7.2f} ns  ({' '.join('%.1f'%x for x in v)})")
PY
