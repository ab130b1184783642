#!/bin/sh
# dom0's /init in the nested Xen runner: bring up the Xen devices, run the real-Xen
# tests, print markers the host reads from the serial console, power off.
export PATH=/xenci-bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 COLUMNS=200
mkdir -p /proc /sys /dev  # the initramfs has none of them: the mounts need their mount points
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /root /run /var/tmp
mount -t devpts devpts /dev/pts  # xenconsoled gives each guest console a pty
mount -t tmpfs tmpfs /tmp
echo "XENCI-STAGE dom0-init"
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-netback; do
    insmod /lib/modules/xenci/$m.ko || echo "XENCI-ERROR cannot load $m"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || echo "XENCI-ERROR cannot mount xenfs"
dmesg | grep -m1 "xen:events" | sed 's/^/XENCI-KERNEL /'
TIMEOUT=120
SELECT="test_on_xen or xen-real or bad_input_on_xen or xen-guest or lifecycle_xen"
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        xenci_break=1) export XENCI_BREAK=1 ;;
        xenci_hang=1) export XENCI_HANG=1 ;;
        xenci_timeout=*) TIMEOUT=${arg#xenci_timeout=} ;;
        xenci_only=*) SELECT=$(echo "${arg#xenci_only=}" | sed 's/+/ or /g') ;;  # a developer's run (--only)
    esac
done
# a toolstack, and one PV domU for the interdomain tests
XENBIN=$(ls -d /usr/lib/xen-*/bin | head -n 1)  # /usr/lib/xen-4.17/bin, /usr/lib/xen-4.20/bin, ...
export PATH="$PATH:$XENBIN"
XL=$XENBIN/xl
mkdir -p /var/run/xen /var/run/xenstored /var/lib/xenstored /var/log/xen/console /var/lib/xen /run/xen /etc/xen
# each domU gets a PV network device (netfront <-> netback), so its ports have device names in xenstore; libxl
# runs the vif's hotplug script itself: ours only brings netback's interface up (no bridge, no traffic)
mkdir -p /etc/xen/scripts
cat > /etc/xen/scripts/vif-xenci <<'VIF'
#!/bin/sh
case "$1" in online|add) [ -n "$vif" ] && ip link set "$vif" up ;; esac
exit 0
VIF
chmod 755 /etc/xen/scripts/vif-xenci
if $XENBIN/xenstored --pid-file /run/xenstored.pid >/tmp/xenstored.log 2>&1; then
    # guests' consoles logged to /var/log/xen/console/guest-NAME.log: the test guest's output (tests/test_guest.py)
    $XENBIN/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console \
        >/tmp/xenconsoled.log 2>&1
    $XENBIN/xen-init-dom0 >/tmp/xen-init-dom0.log 2>&1  # dom0's and the cpupools' xenstore entries
    # two PV domUs, the same kernel and root: Linux's FIFO ABI, and its 2-level one (xen.fifo_events=0);
    # 512 MB each (their root unpacked is ~150 MB) keeps both beside dom0 in QEMU's 3 GB
    create() {  # NAME VCPUS EXTRA VAR: VAR=domid, or VAR_ERROR=why
        cat > /etc/xen/$1.cfg <<CFG
name = "$1"
type = "pv"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/domu.gz"
extra = "console=hvc0 rdinit=/init quiet $3"
memory = 512
vcpus = $2
vif = [ "script=vif-xenci" ]
on_crash = "destroy"
CFG
        if $XL create /etc/xen/$1.cfg >/tmp/xl-create-$1.log 2>&1; then
            export $4=$($XL domid $1)
            echo "XENCI-STAGE $1 $($XL domid $1) created"
        else
            sed "s/^/XENCI-INFO xl $1: /" /tmp/xl-create-$1.log
            export $4_ERROR="xl create $1 failed: $(grep -m1 error /tmp/xl-create-$1.log)"
        fi
    }
    create domu1 1 "" XENCI_DOMU
    # nopvspin: Linux's PV spinlock kicker is an IPI port kept masked by design (woken through SCHEDOP_poll),
    # pending+masked at rest, which doctor cannot tell from a stuck port; without it every bound port is unmasked
    create domu2l 2 "xen.fifo_events=0 nopvspin xenci_privcmd=unrestricted" XENCI_DOMU_2L
else
    export XENCI_DOMU_ERROR="xenstored did not start: $(tail -n 3 /tmp/xenstored.log | tr '\n' ' ')"
    export XENCI_DOMU_2L_ERROR="$XENCI_DOMU_ERROR"
fi
[ -n "${XENCI_DOMU_ERROR:-}" ] && echo "XENCI-ERROR $XENCI_DOMU_ERROR"
[ -n "${XENCI_DOMU_2L_ERROR:-}" ] && echo "XENCI-ERROR $XENCI_DOMU_2L_ERROR"
# xenevt as a dom0 admin has it: its Debian package, installed with dpkg (the tests then import that, not a tree)
if [ -e /xenci/xenevt.deb ]; then
    # (Debian's dpkg and the dpkg-deb it calls, not busybox's, whose applets come first on /init's PATH)
    if PATH=/usr/sbin:/usr/bin:/sbin:/bin:/xenci-bin /usr/bin/dpkg -i /xenci/xenevt.deb >/tmp/dpkg.log 2>&1; then
        export XENCI_DEB_VERSION="$(/usr/bin/dpkg-query -W -f '${Version}' xenevt)"
        echo "XENCI-STAGE installed xenevt $XENCI_DEB_VERSION"
    else
        sed 's/^/XENCI-INFO dpkg: /' /tmp/dpkg.log
        echo "XENCI-ERROR dpkg -i xenevt.deb failed"
    fi
fi
echo "XENCI-BEGIN"
cd /xenevt
XENEVT_REQUIRE_XEN=1 python3 -m pytest -v -rA --durations=60 --color=no -p no:cacheprovider -o addopts="" --timeout="$TIMEOUT" \
    --timeout-method=signal -k "$SELECT" tests/test_on_xen.py tests/test_contract.py \
    tests/test_scenarios.py tests/test_cli_errors.py tests/test_guest.py tests/test_lifecycle_xen.py \
    tests/test_lateeoi_xen.py 2>&1
echo "XENCI-SUMMARY rc=$?"
sync
poweroff -f
