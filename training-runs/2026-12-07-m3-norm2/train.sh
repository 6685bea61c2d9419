#!/bin/bash
# m3-norm2: each m3-norm network (runs/norm-models, 300 steps under the mask-robust z-score), 600 steps more under
# the same normalisation at a lower learning rate (2e-4, cosine), seed 12; otherwise the m3-thick2 settings. All three
# side by side, one thread each. SRC: a copy of src/ with ../2026-12-07-m3-norm/normalisation.patch applied.
cd /work/main
SRC=${SRC:-src}
common="--data ../shared/data/brats-real-labelled --data synthseg2 --data-weights 1,1 --atlas ../shared/data \
 --steps 600 --patch-size 80 --batch-size 2 --learning-rate 2e-4 --checkpoint-every 50 --seed 12 --phantoms 12 \
 --refresh-every 10 --foreground-share 0.3333 --thick-slices 0.5 --threads 1"
for a in unet axial_unet transbts; do
  roi=112; [ $a = transbts ] && roi=96
  PYTHONPATH=$SRC .venv/bin/python -m htcnns.cli train --architecture $a --init-from runs/norm-models/$a \
     --output runs/norm2/$a --roi-size $roi $common > runs/norm2-$a.log 2>&1 &
done
wait
echo done > runs/norm2.done
