# The Debian package (make deb): CPack's DEB generator over the install
# rules. Configure with -DCMAKE_INSTALL_PREFIX=/usr (the Makefile's build
# tree is) so that the configuration lands in /etc and the unit's ExecStart
# in /usr/sbin; the package installs where the tree was configured to, so
# the paths configured into the unit always hold.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_PACKAGE_NAME umdev)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "umdev developers <umdev@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "userspace VFIO and mediated-device daemon")
# The long description; CPack puts the summary above it.
set(CPACK_PACKAGE_DESCRIPTION
    "umdevd serves mediated devices (an mtty serial card, GPU slices) from\nuserspace over vfio-user sockets that QEMU attaches; umdevctl manages them\nthe way mdevctl does, and umdev-probe drives a device without a VM.")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Dependencies from the shared libraries the binaries link (dpkg-shlibdeps).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "fuse3, mesa-vulkan-drivers")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "qemu-system-x86, mdevctl")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/tools/service/debian/conffiles
    ${PROJECT_SOURCE_DIR}/tools/service/debian/postinst
    ${PROJECT_SOURCE_DIR}/tools/service/debian/prerm
    ${PROJECT_SOURCE_DIR}/tools/service/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Debug information stays in the build tree.
set(CPACK_STRIP_FILES ON)
include(CPack)
