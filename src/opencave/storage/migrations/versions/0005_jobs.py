"""background job queue (remesh requests become jobs)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 10:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.SmallInteger(), nullable=False),
    sa.Column('submitted_by', sa.String(length=64), nullable=True),
    sa.Column('key', sa.String(length=255), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.SmallInteger(), nullable=False),
    sa.Column('max_attempts', sa.SmallInteger(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('heartbeat', sa.DateTime(timezone=True), nullable=True),
    sa.Column('progress', sa.Text(), nullable=True),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('ix_jobs_claim', 'jobs', ['status', 'priority', 'id'], unique=False)
    active = sa.text("status IN ('queued', 'running')")
    op.create_index('uq_jobs_active_key', 'jobs', ['key'], unique=True, sqlite_where=active, postgresql_where=active)
    op.drop_table('remesh_requests')


def downgrade() -> None:
    op.create_table('remesh_requests',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('table_id', sa.String(length=128), nullable=False),
    sa.Column('l2_id', sa.BigInteger(), nullable=False),
    sa.Column('requested', sa.DateTime(timezone=True), nullable=False),
    sa.Column('priority', sa.SmallInteger(), nullable=False),
    sa.ForeignKeyConstraint(['table_id'], ['cg_graphs.table_id'], name=op.f('fk_remesh_requests_table_id_cg_graphs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remesh_requests'))
    )
    op.drop_index('uq_jobs_active_key', table_name='jobs')
    op.drop_index('ix_jobs_claim', table_name='jobs')
    op.drop_table('jobs')
