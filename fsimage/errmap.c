/* errmap.c — libext2fs errcode → -errno, the one place it happens. */
#include <errno.h>

#include "fsimage/volume_int.h"

int lf_errno_from_ext2(errcode_t e)
{
	if (!e)
		return 0;
	/* libext2fs passes plain errno values (from the io_manager, malloc)
	 * through unchanged. */
	if (e > 0 && e < 256)
		return -(int)e;
	switch (e) {
	case EXT2_ET_DIR_NO_SPACE:
	case EXT2_ET_BLOCK_ALLOC_FAIL:
	case EXT2_ET_INODE_ALLOC_FAIL:
	case EXT2_ET_EA_NO_SPACE:
	case EXT2_ET_INLINE_DATA_NO_SPACE:
	case EXT2_ET_EXTENT_NO_SPACE:
	case EXT2_ET_DIR_NO_SPACE_FOR_CSUM:
		return -ENOSPC;
	case EXT2_ET_FILE_NOT_FOUND:
	case EXT2_ET_DB_NOT_FOUND:
		return -ENOENT;
	case EXT2_ET_DIR_EXISTS:
	case EXT2_ET_FILE_EXISTS:
		return -EEXIST;
	case EXT2_ET_NO_DIRECTORY:
		return -ENOTDIR;
	case EXT2_ET_RO_FILSYS:
	case EXT2_ET_FILE_RO:
		return -EROFS;
	case EXT2_ET_FILE_TOO_BIG:
	case EXT2_ET_EXTENT_INVALID_LENGTH:
		return -EFBIG;
	case EXT2_ET_EA_KEY_NOT_FOUND:
	case EXT2_ET_NO_INLINE_DATA:
		return -ENODATA;
	case EXT2_ET_NO_MEMORY:
		return -ENOMEM;
	case EXT2_ET_TOO_MANY_REFS:
		return -EMLINK;
	case EXT2_ET_SYMLINK_LOOP:
		return -ELOOP;
	case EXT2_ET_INVALID_ARGUMENT:
	case EXT2_ET_EA_BAD_NAME_LEN:
	case EXT2_ET_BAD_INODE_NUM:
		return -EINVAL;
	case EXT2_ET_EA_BAD_VALUE_SIZE:
		return -ERANGE;
	/* An ext2 without the ext_attr feature has no xattrs to give: that
	 * is "not supported" (getfattr stays quiet), not a damaged volume. */
	case EXT2_ET_MISSING_EA_FEATURE:
	case EXT2_ET_UNIMPLEMENTED:
	case EXT2_ET_OP_NOT_SUPPORTED:
	case EXT2_ET_UNSUPP_FEATURE:
	case EXT2_ET_RO_UNSUPP_FEATURE:
	case EXT2_ET_EXTENT_NOT_SUPPORTED:
		return -EOPNOTSUPP;
	default:
		/* Checksum and corruption codes end here too: ext4 says
		 * EUCLEAN (EFSCORRUPTED), but EIO is what users understand. */
		return -EIO;
	}
}
