#!/bin/sh
# dom0's /init in the nested Xen runner: bring up the Xen devices, run the real-Xen
# tests, print markers the host reads from the serial console, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 COLUMNS=200
mkdir -p /proc /sys /dev  # the initramfs has none of them: the mounts need their mount points
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /root /run /var/tmp
mount -t tmpfs tmpfs /tmp
echo "XENCI-STAGE dom0-init"
for m in xen-evtchn xen-privcmd xenfs; do
    insmod /lib/modules/xenci/$m.ko || echo "XENCI-ERROR cannot load $m"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || echo "XENCI-ERROR cannot mount xenfs"
dmesg | grep -m1 "xen:events" | sed 's/^/XENCI-KERNEL /'
TIMEOUT=120
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        xenci_break=1) export XENCI_BREAK=1 ;;
        xenci_hang=1) export XENCI_HANG=1 ;;
        xenci_timeout=*) TIMEOUT=${arg#xenci_timeout=} ;;
    esac
done
echo "XENCI-BEGIN"
cd /xenevt
XENEVT_REQUIRE_XEN=1 python3 -m pytest -v -rA --color=no -p no:cacheprovider -o addopts="" --timeout="$TIMEOUT" \
    --timeout-method=signal -k "test_on_xen or xen-real" tests/test_on_xen.py tests/test_contract.py 2>&1
echo "XENCI-SUMMARY rc=$?"
sync
poweroff -f
