"""Alembic's environment for the work-queue tables (``_workqueue._schema`` runs it).

It migrates on the connection the caller hands over in ``config.attributes["connection"]`` and
keeps its version in a table of its own, so it never touches Optuna's ``alembic_version``.
"""

from alembic import context

from bilevel_optuna.studies._workqueue._schema import VERSION_TABLE
from bilevel_optuna.studies._workqueue._schema import ours
from bilevel_optuna.studies._workqueue._tables import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    include_name=ours,
)
with context.begin_transaction():
    context.run_migrations()
