"""What PostgreSQL's errors mean to a caller: one list of each kind, used by every process."""

from __future__ import annotations

import asyncpg
from asyncpg import exceptions as pg

# The database is away: the server or the connection failed, not the data, so the same work
# can succeed later (the bridge retries with backoff, the API answers 503).
DATABASE_AWAY_ERRORS: tuple[type[Exception], ...] = (
    pg.PostgresConnectionError,
    pg.OperatorInterventionError,  # admin shutdown, cannot connect now, query canceled
    pg.InsufficientResourcesError,  # too many connections, disk full, out of memory
    pg.ObjectNotInPrerequisiteStateError,  # "database is not currently accepting connections"
    asyncpg.InterfaceError,
    # The pool raises this when it resets a connection the server killed mid-operation.
    asyncpg.InternalClientError,
    OSError,  # ConnectionError among them
    TimeoutError,
)

# Of those, what asyncpg raises when the connection under a statement is gone (or cannot be
# had): a read is idempotent, so db/read_pool.py runs it again once on a fresh connection.
DEAD_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    pg.PostgresConnectionError,
    pg.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)

# A row refused: errors a row's content causes (class 22 data exceptions such as invalid text
# representation or untranslatable character, class 23 such as a check violation or no
# partition for its day, class 54 such as a value too large to index; a string the driver
# cannot encode): the message's fault, never the service's. The rest of its batch is fine, so
# the caller isolates the row and refuses only it; retrying would not help.
ROW_REFUSED_ERRORS: tuple[type[Exception], ...] = (
    pg.DataError,
    pg.IntegrityConstraintViolationError,
    pg.ProgramLimitExceededError,
    UnicodeEncodeError,
)

# The transaction lost a race with another one (two batches holding the same identities can
# deadlock in the merge); it was rolled back, so running it again at once is safe.
LOST_RACE_ERRORS: tuple[type[Exception], ...] = (
    pg.DeadlockDetectedError,
    pg.SerializationError,
)
LOST_RACE_ATTEMPTS = 3


class StoredAlreadyError(Exception):
    """db.readings.merge_readings(savepoint=False) found a reading of the batch stored already
    (or one twice in it): its transaction is aborted and holds nothing; running it again with
    the merge (db.readings.merge_via_staging) stores the rest. Not a row's fault, so not one of
    ROW_REFUSED_ERRORS."""
