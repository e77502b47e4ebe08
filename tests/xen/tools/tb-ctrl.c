/*
 * tb-ctrl /dev/bus/usb/BBB/DDD SECONDS
 *
 * Synchronous USB control transfers per second through usbfs: a loop of standard
 * GET_DESCRIPTOR(DEVICE, 18 bytes) requests (ioctl USBDEVFS_CONTROL, one at a time) for
 * SECONDS of wall time (CLOCK_MONOTONIC), then "CTRL_PER_S <transfers per second>" on stdout
 * and the raw count on stderr. usbfs sends each request to the device (it answers read()s of
 * the node from its cache, ioctls never), so in a domU every transfer crosses the pvUSB ring
 * and the backend; no interface is claimed, so the bound driver (usb-storage) keeps working.
 *
 * Every answer is checked: 18 bytes, bLength 18, bDescriptorType 1 (DEVICE), and identical to
 * the first answer, so a path that drops or corrupts transfers fails instead of looking fast.
 *
 * Exists because the busybox in dom0 and the domUs has no usbfs tool. Built static by
 * tests/xen/build.sh. Exits 1 with one line on stderr on any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/usb/ch9.h>
#include <linux/usbdevice_fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 5000 /* per transfer; TCG is slow, a stuck path still ends the run */

static const char *dev;

static void die(const char *what)
{
	fprintf(stderr, "tb-ctrl: %s: %s: %s\n", dev, what, errno ? strerror(errno) : "failed");
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: tb-ctrl /dev/bus/usb/BBB/DDD SECONDS   (SECONDS 1-3600)\n");
	exit(2);
}

static double now(void)
{
	struct timespec ts;
	errno = 0;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		die("clock_gettime");
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One GET_DESCRIPTOR(DEVICE) into DESC; exits unless it is a complete device descriptor. */
static void get_device_descriptor(int fd, unsigned char desc[USB_DT_DEVICE_SIZE])
{
	struct usbdevfs_ctrltransfer ct = {
		.bRequestType = USB_DIR_IN | USB_TYPE_STANDARD | USB_RECIP_DEVICE,
		.bRequest = USB_REQ_GET_DESCRIPTOR,
		.wValue = USB_DT_DEVICE << 8,
		.wIndex = 0,
		.wLength = USB_DT_DEVICE_SIZE,
		.timeout = TIMEOUT_MS,
		.data = desc,
	};
	int got;
	memset(desc, 0, USB_DT_DEVICE_SIZE);
	do
		got = ioctl(fd, USBDEVFS_CONTROL, &ct);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		die("ioctl USBDEVFS_CONTROL GET_DESCRIPTOR(DEVICE)");
	if (got != USB_DT_DEVICE_SIZE || desc[0] != USB_DT_DEVICE_SIZE || desc[1] != USB_DT_DEVICE) {
		errno = 0;
		fprintf(stderr, "tb-ctrl: %s: bad device descriptor: %d bytes, bLength %u, bDescriptorType %u\n",
			dev, got, desc[0], desc[1]);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3)
		usage();
	dev = argv[1];
	char *end;
	errno = 0;
	long seconds = strtol(argv[2], &end, 10);
	if (errno || end == argv[2] || *end || seconds < 1 || seconds > 3600)
		usage();

	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("open");
	unsigned char first[USB_DT_DEVICE_SIZE], desc[USB_DT_DEVICE_SIZE];
	get_device_descriptor(fd, first);

	unsigned long long transfers = 0;
	double start = now(), elapsed = 0;
	while (elapsed < (double)seconds) {
		get_device_descriptor(fd, desc);
		if (memcmp(desc, first, sizeof desc) != 0) {
			fprintf(stderr, "tb-ctrl: %s: device descriptor changed after %llu transfers\n",
				dev, transfers);
			return 1;
		}
		transfers++;
		elapsed = now() - start;
	}
	if (close(fd) != 0)
		die("close");
	fprintf(stderr, "tb-ctrl: %llu GET_DESCRIPTOR(DEVICE) transfers in %.3f s, device %02x%02x:%02x%02x\n",
		transfers, elapsed, first[9], first[8], first[11], first[10]);
	if (printf("CTRL_PER_S %.1f\n", (double)transfers / elapsed) < 0 || fflush(stdout) != 0)
		die("write stdout");
	return 0;
}
