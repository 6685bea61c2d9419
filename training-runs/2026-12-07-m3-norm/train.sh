#!/bin/bash
# m3-norm: each bundled m3-thick2 network, 300 steps more under the new input normalisation (z-score statistics over
# the brain eroded by 10 voxels, htcnns.inference.preprocess.STATISTICS_EROSION_VOXELS). Otherwise the m3-thick2
# settings (--thick-slices 0.5), seed 11. All three side by side, one thread each. SRC: a copy of src/ with normalisation.patch applied (not on main).
cd /work/main
SRC=${SRC:-src}
common="--data ../shared/data/brats-real-labelled --data synthseg2 --data-weights 1,1 --atlas ../shared/data \
 --steps 300 --patch-size 80 --batch-size 2 --learning-rate 3e-4 --checkpoint-every 50 --seed 11 --phantoms 12 \
 --refresh-every 10 --foreground-share 0.3333 --thick-slices 0.5 --threads 1"
for a in unet axial_unet transbts; do
  roi=112; [ $a = transbts ] && roi=96
  PYTHONPATH=$SRC .venv/bin/python -m htcnns.cli train --architecture $a --init-from models/$a \
     --output runs/norm/$a --roi-size $roi $common > runs/norm-$a.log 2>&1 &
done
wait
echo done > runs/norm.done
