#!/bin/bash
# m3-consist: each bundled m3-thick2 network, 300 steps more with --thick-slices 0.5 and --thick-consistency 1:
# the loss adds the disagreement between the network on the (thick) patch and its frozen parent on the same patch
# without thick slices. Seed 10; otherwise the m3-thick2 settings. All three side by side, one thread each.
cd /work/main
common="--data ../shared/data/brats-real-labelled --data synthseg2 --data-weights 1,1 --atlas ../shared/data \
 --steps 300 --patch-size 80 --batch-size 2 --learning-rate 3e-4 --checkpoint-every 50 --seed 10 --phantoms 12 \
 --refresh-every 10 --foreground-share 0.3333 --thick-slices 0.5 --thick-consistency 1 --threads 1"
for a in unet axial_unet transbts; do
  roi=112; [ $a = transbts ] && roi=96
  .venv/bin/htcnns train --architecture $a --init-from models/$a --output runs/consist/$a --roi-size $roi $common \
     > runs/consist-$a.log 2>&1 &
done
wait
echo done > runs/consist.done
