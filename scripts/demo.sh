#!/usr/bin/env bash
# The end-to-end demo on the sample set shipped in examples/grocery-mini (MIT, see its LICENSE):
# train an encoder, compare it with the pretrained baseline, create the index, ingest the photos
# with their catalogue text through the Celery workers, and run example searches.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=examples/grocery-mini
OUT=${DEMO_OUT:-runs/demo}
INDEX=${DEMO_INDEX:-demo-products}
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. split the sample photos: the encoder trains on half of each product's photos"
rm -rf "$OUT/split"
esm split "$DATA/images" --out "$OUT/split" --protocol in-domain --test-fraction 0.5

step "2. train a learned Mahalanobis metric on frozen EfficientNet-Lite0 features"
esm train "$OUT/split/train" --out "$OUT/model.pt" --loss mahalanobis --dim 128 --epochs 40

step "3. retrieval metrics on the held-out photos: learned metric vs pretrained cosine"
esm evaluate "$OUT/split/test" --model "$OUT/model.pt" --report "$OUT/report.html"
esm evaluate "$OUT/split/test" --baseline efficientnet-lite0

step "4. create the index (dims and similarity from the model card)"
# the demo starts over: drop the index a previous demo run left behind (possibly another model)
python - "$INDEX" <<'PY'
import sys
from es_metric.config import Settings
from es_metric.index.client import make_client
es = make_client(Settings.from_env())
for name in es.indices.get(index=sys.argv[1] + "-*", allow_no_indices=True):
    es.indices.delete(index=name)  # by name: clusters may refuse wildcard deletes
    print(f"deleted {name} from an earlier demo run")
PY
# --force: the sample's 14 products leave the training gate 11 validation queries, too few for its
# bootstrap margin (`esm train` above says "gate NOT PASSED"); step 3 measured the model on the
# held-out half instead, the way docs/training.md gives for a gate that cannot pass.
esm mapping create "$INDEX" --model "$OUT/model.pt" --force --text-field title --text-field description \
  --keyword-field group --keyword-field product --keyword-field coarse_class
step "5. ingest photos + catalogue text through the Celery workers"
esm ingest "$INDEX" "$DATA/manifest.jsonl"

Q=$(ls "$OUT"/split/test/Arla-Natural-Yoghurt/*.jpg | head -1)
step "6a. search by image: $Q"
esm search "$INDEX" --image "$Q" -k 5
step "6b. image + filter group=Fruit (what fruit looks most like this yoghurt?)"
esm search "$INDEX" --image "$Q" --filter group=Fruit -k 5
step "6c. image + text 'vanilla' (hybrid)"
esm search "$INDEX" --image "$Q" --text vanilla -k 5
step "6d. more like an indexed document"
esm search "$INDEX" --like "Banana/test_Banana_001" -k 5
echo
echo "evaluation report: $OUT/report.html   web page: esm serve, then open http://127.0.0.1:8000"
