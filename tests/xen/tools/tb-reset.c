/*
 * tb-reset /dev/bus/usb/BBB/DDD
 *
 * Resets a USB device the way a driver's error handling does (USBDEVFS_RESET: the hub port
 * is reset and the device re-enumerated at the same address, its drivers rebound). Exists
 * because the busybox domU has no usbreset. Built by tests/xen/build.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/usbdevice_fs.h>

int main(int argc, char **argv)
{
	int fd;
	if (argc != 2) {
		fprintf(stderr, "usage: tb-reset /dev/bus/usb/BBB/DDD\n");
		return 2;
	}
	fd = open(argv[1], O_WRONLY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, USBDEVFS_RESET, 0) != 0) {
		fprintf(stderr, "tb-reset: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	close(fd);
	printf("reset %s\n", argv[1]);
	return 0;
}
