"""meshes, neuroglancer states and skeletons

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 23:05:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('l2_meshes',
    sa.Column('table_id', sa.String(length=128), nullable=False),
    sa.Column('l2_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('fragment', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['table_id'], ['cg_graphs.table_id'], name=op.f('fk_l2_meshes_table_id_cg_graphs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('table_id', 'l2_id', name=op.f('pk_l2_meshes'))
    )
    op.create_table('ngl_documents',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'id', name=op.f('pk_ngl_documents'))
    )
    op.create_table('skeletons',
    sa.Column('datastack', sa.String(length=120), nullable=False),
    sa.Column('root_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('generator', sa.SmallInteger(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['datastack'], ['datastacks.name'], name=op.f('fk_skeletons_datastack_datastacks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('datastack', 'root_id', name=op.f('pk_skeletons'))
    )
    op.create_table('skeleton_refusals',
    sa.Column('datastack', sa.String(length=120), nullable=False),
    sa.Column('root_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('added', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['datastack'], ['datastacks.name'], name=op.f('fk_skeleton_refusals_datastack_datastacks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('datastack', 'root_id', name=op.f('pk_skeleton_refusals'))
    )


def downgrade() -> None:
    op.drop_table('skeleton_refusals')
    op.drop_table('skeletons')
    op.drop_table('ngl_documents')
    op.drop_table('l2_meshes')
