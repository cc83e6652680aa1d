# Shared by the scripts that build cached Debian roots (qemu-root,
# debian-root): unmounting and removing a root tree safely. Sourced; defines
# functions only.

# debootstrap mounts proc, sysfs and (in containers) device binds inside the
# target; an interrupted run can leave them, and removing the tree must not
# descend into them.
unmount_under() {
  local dir="$1" mnt
  # Field 5 of mountinfo is the mount point; deepest first so parents unmount last.
  awk -v d="$dir" '{ if ($5 == d || index($5, d "/") == 1) print $5 }' /proc/self/mountinfo |
    sort -r | while read -r mnt; do
      umount -l "$(printf '%b' "$mnt")" 2>/dev/null || true
    done
}

remove_tree() {
  [[ -e "$1" ]] || return 0
  log "removing $1"
  unmount_under "$1"
  rm -rf --one-file-system "$1"
}

# Character devices dpkg scripts expect; in a container debootstrap leaves
# /dev empty. $1: the root.
make_dev_nodes() {
  local dir="$1" spec name major minor
  for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9; do
    IFS=: read -r name major minor <<<"$spec"
    [[ -e "$dir/dev/$name" ]] || mknod -m 666 "$dir/dev/$name" c "$major" "$minor"
  done
}
