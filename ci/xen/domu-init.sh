#!/bin/sh
# /init of the nested runner's PV domU: load the Xen drivers, run xenevt's self-check, then idle.
export PATH=/xenci-bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# privcmd refuses a domU's own mappings and hypercalls unless loaded unrestricted (XSA-482): the 2-level domU
# needs it to map its shared_info (a PV kernel's fixmap page, outside /proc/kcore); the FIFO domU keeps the default
PRIVCMD=""
grep -q "xenci_privcmd=unrestricted" /proc/cmdline && PRIVCMD="unrestricted=1"
insmod /lib/modules/xenci/xen-evtchn.ko
insmod /lib/modules/xenci/xen-privcmd.ko $PRIVCMD
insmod /lib/modules/xenci/xenfs.ko
insmod /lib/modules/xenci/xen-netfront.ko  # the vif dom0 gave it: netfront binds its tx/rx ports at probe
mkdir -p /proc/xen && mount -t xenfs xenfs /proc/xen
python3 /xenevt/ci/xen/domu_check.py
while :; do sleep 3600; done
