#!/bin/bash
# m3-thick2: each bundled m3-thick network, 300 steps more with --thick-slices 0.5, seed 9
cd /work/main
common="--data ../shared/data/brats-real-labelled --data synthseg2 --data-weights 1,1 --atlas ../shared/data \
 --steps 300 --patch-size 80 --batch-size 2 --learning-rate 3e-4 --checkpoint-every 50 --seed 9 --phantoms 12 \
 --refresh-every 10 --foreground-share 0.3333 --thick-slices 0.5"
for a in unet axial_unet; do
  .venv/bin/htcnns train --architecture $a --init-from models/$a --output runs/thick2/$a --roi-size 112 --threads 1 $common \
     > runs/thick2-$a.log 2>&1 &
done
wait
.venv/bin/htcnns train --architecture transbts --init-from models/transbts --output runs/thick2/transbts --roi-size 96 --threads 2 $common \
   > runs/thick2-transbts.log 2>&1
echo done > runs/thick2.done
