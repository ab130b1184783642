#!/bin/sh
# dom0's /init in `xenevt runner run`: bring up the Xen devices, start the domUs asked for, run the user's
# command in /project, print markers the host reads from the serial console, power off.
export PATH=/xenci-bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 COLUMNS=200
# the console is a terminal, but a CI log reads the output: no pager, no terminal control
export PAGER=cat TERM=dumb
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /root /run /var/tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
echo "XENEVT-RUNNER-STAGE dom0-init"
dmesg -n 1  # the kernel's own messages stay in dmesg, out of the command's streamed output
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-netback; do
    insmod /lib/modules/xenevt-runner/$m.ko || echo "XENEVT-RUNNER-ERROR cannot load $m"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || echo "XENEVT-RUNNER-ERROR cannot mount xenfs"
dmesg | grep -m1 "xen:events" | sed 's/^/XENEVT-RUNNER-KERNEL /'
DOMUS=0
ABI=fifo
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        runner_domu=*) DOMUS=${arg#runner_domu=} ;;
        runner_abi=*) ABI=${arg#runner_abi=} ;;
    esac
done
XENBIN=$(ls -d /usr/lib/xen-*/bin | head -n 1)
export PATH="$PATH:$XENBIN"
mkdir -p /var/run/xen /var/run/xenstored /var/lib/xenstored /var/log/xen/console /var/lib/xen /run/xen /etc/xen
export XENEVT_RUNNER_DOMUS=""
if [ "$DOMUS" -gt 0 ]; then
    echo "XENEVT-RUNNER-STAGE domu-start"
    # each domU gets a PV vif (netfront <-> netback): libxl runs this hotplug script, which only brings
    # netback's interface up (no bridge, no traffic)
    mkdir -p /etc/xen/scripts
    printf '#!/bin/sh\ncase "$1" in online|add) [ -n "$vif" ] && ip link set "$vif" up ;; esac\nexit 0\n' \
        > /etc/xen/scripts/vif-runner
    chmod 755 /etc/xen/scripts/vif-runner
    EXTRA=""
    [ "$ABI" = 2l ] && EXTRA="xen.fifo_events=0"
    if $XENBIN/xenstored --pid-file /run/xenstored.pid >/tmp/xenstored.log 2>&1; then
        $XENBIN/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console \
            >/tmp/xenconsoled.log 2>&1
        $XENBIN/xen-init-dom0 >/tmp/xen-init-dom0.log 2>&1
        i=1
        while [ "$i" -le "$DOMUS" ]; do
            cat > /etc/xen/domu$i.cfg <<CFG
name = "domu$i"
type = "pv"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/domu.gz"
extra = "console=hvc0 rdinit=/init quiet $EXTRA"
memory = 160
vcpus = 1
vif = [ "script=vif-runner" ]
on_crash = "destroy"
CFG
            if xl create /etc/xen/domu$i.cfg >/tmp/xl-create-$i.log 2>&1; then
                XENEVT_RUNNER_DOMUS="$XENEVT_RUNNER_DOMUS $(xl domid domu$i)"
                echo "XENEVT-RUNNER-DOMU domu$i $(xl domid domu$i)"
            else
                echo "XENEVT-RUNNER-ERROR xl create domu$i failed: $(grep -m1 -i error /tmp/xl-create-$i.log)"
            fi
            i=$((i + 1))
        done
    else
        echo "XENEVT-RUNNER-ERROR xenstored did not start: $(tail -n 3 /tmp/xenstored.log | tr '\n' ' ')"
    fi
fi
export XENEVT_RUNNER_DOMUS="${XENEVT_RUNNER_DOMUS# }" XENEVT_RUNNER_ABI="$ABI"
# --deb: xenevt's package installed with Debian's dpkg (not busybox's applet, first on PATH; nor the dpkg-deb it
# calls), as an admin's apt would; a failed install is the runner's failure, the command does not run
if [ -e /runner/xenevt.deb ]; then
    if PATH=/usr/sbin:/usr/bin:/sbin:/bin:/xenci-bin /usr/bin/dpkg -i /runner/xenevt.deb >/tmp/dpkg.log 2>&1; then
        echo "XENEVT-RUNNER-STAGE installed xenevt $(/usr/bin/dpkg-query -W -f '${Version}' xenevt)"
    else
        sed 's/^/XENEVT-RUNNER-INFO dpkg: /' /tmp/dpkg.log
        echo "XENEVT-RUNNER-FATAL dpkg -i of the --deb package failed: $(grep -m1 -i 'error\|depends' /tmp/dpkg.log)"
        sync
        poweroff -f
    fi
fi
echo "XENEVT-RUNNER-BEGIN"
cd /project && sh /runner/command </dev/null 2>&1
echo "XENEVT-RUNNER-END rc=$?"
sync
poweroff -f
