"""libpager: the Hurd's pager library over machemu's external pager protocol.

A file system makes one pager per memory object with ``pager_create(ops, bucket, ...)``
(``ops`` implements ``PagerOps``: read_page, write_page / write_pages, unlock_page,
report_extent, clear_user_data, notify_evict, dropweak), hands ``pager_get_port(p)`` to
vm_map or an io_map reply, and serves its bucket with a libports thread model whose
demuxer is ``PagerDemuxer(bucket, its_own_handlers)``.  The kernel's memory_object_*
messages then reach the handlers here (one module per message: init, terminate,
data_request, data_unlock, data_return, lock_completed, supply_completed,
change_completed).  ``pager_sync`` / ``pager_flush`` / ``pager_return`` (and their
``_some`` forms), ``pager_change_attributes`` and ``pager_shutdown`` drive the kernel
with lock_request.  Every call to the kernel goes through the pager's ``KernelCalls``.
"""

from translators.libpager.demuxer import (
                                          PagerDemuxer,
                                          current_seqno,
                                          make_pager_handler,
                                          pager_demux,
                                          pager_handlers,
)
from translators.libpager.lock_object import _pager_lock_object
from translators.libpager.pagemap import (
                                          PAGE_EDQUOT,
                                          PAGE_EIO,
                                          PAGE_ENOSPC,
                                          PAGE_NOERR,
                                          PM_ERROR,
                                          PM_INCORE,
                                          PM_INIT,
                                          PM_INVALID,
                                          PM_NEXTERROR,
                                          PM_PAGEINWAIT,
                                          PM_PAGINGOUT,
                                          PM_WRITEWAIT,
                                          PageMap,
                                          flag_names,
)
from translators.libpager.pager import (
                                          NORMAL,
                                          NOTINIT,
                                          SHUTDOWN,
                                          STAT_KEYS,
                                          LockRequest,
                                          Pager,
                                          PagerOps,
                                          error_code,
                                          pager_bucket_stats,
                                          pager_class,
                                          pager_create,
                                          pager_deref,
                                          pager_dropweak,
                                          pager_get_error,
                                          pager_get_port,
                                          pager_get_right,
                                          pager_get_upi,
                                          pager_import,
                                          pager_stats,
)
from translators.libpager.pager_attr import pager_change_attributes
from translators.libpager.pager_flush import pager_flush, pager_flush_some
from translators.libpager.pager_return import pager_return, pager_return_some
from translators.libpager.pager_shutdown import pager_shutdown
from translators.libpager.pager_sync import pager_sync, pager_sync_some
from translators.libpager.stubs import KernelCalls

__all__ = [
    "PagerDemuxer", "current_seqno", "make_pager_handler", "pager_demux", "pager_handlers",
    "_pager_lock_object", "PAGE_EDQUOT", "PAGE_EIO", "PAGE_ENOSPC", "PAGE_NOERR",
    "PM_ERROR", "PM_INCORE", "PM_INIT", "PM_INVALID", "PM_NEXTERROR", "PM_PAGEINWAIT",
    "PM_PAGINGOUT", "PM_WRITEWAIT", "PageMap", "flag_names", "NORMAL", "NOTINIT",
    "SHUTDOWN", "STAT_KEYS", "LockRequest", "Pager", "PagerOps",
    "error_code", "pager_bucket_stats", "pager_class", "pager_create", "pager_deref",
    "pager_dropweak", "pager_get_error", "pager_get_port", "pager_get_right",
    "pager_get_upi", "pager_import", "pager_stats", "pager_change_attributes",
    "pager_flush", "pager_flush_some", "pager_return", "pager_return_some",
    "pager_shutdown", "pager_sync", "pager_sync_some", "KernelCalls",
]
