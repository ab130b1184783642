#!/bin/sh
# /init of the nested runner's PV domU: load the Xen drivers, run xenevt's self-check, then idle.
export PATH=/xenci-bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for m in xen-evtchn xen-privcmd xenfs; do insmod /lib/modules/xenci/$m.ko; done
mkdir -p /proc/xen && mount -t xenfs xenfs /proc/xen
python3 /xenevt/ci/xen/domu_check.py
while :; do sleep 3600; done
