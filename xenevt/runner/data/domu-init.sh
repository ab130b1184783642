#!/bin/sh
# /init of a runner's PV domU: its Xen drivers (event channels, the vif's netfront), then idle.
export PATH=/bin
mkdir -p /proc /sys /dev /proc
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in xen-evtchn xen-netfront; do insmod /lib/modules/xenevt-runner/$m.ko; done
while :; do sleep 3600; done
