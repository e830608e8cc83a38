"""SQLAlchemy 1.4 (Core and ORM, psycopg2; Debian's packages) through shardproxy on 4 shards: the
ORM flows that need writes on several shards in one transaction.
Usage: sqlalchemy_check.py URL BASE_ID"""
import sys
from datetime import datetime, timezone

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Numeric, String, Table, create_engine, func, select, text
from sqlalchemy.orm import Session, declarative_base

url, base = sys.argv[1], int(sys.argv[2])
engine = create_engine(url, future=True)
Base = declarative_base()


class Order(Base):
    # The mapped key is (id, created_at): UPDATE/DELETE by it go to every shard.
    __tablename__ = "orders"
    id = Column(BigInteger, primary_key=True)
    created_at = Column(DateTime(timezone=True), primary_key=True)
    user_id = Column(BigInteger, nullable=False)
    restaurant_id = Column(BigInteger, nullable=False)
    total = Column(Numeric(10, 2), nullable=False)
    status = Column(String, nullable=False)


# create_all: DDL inside a transaction, through the proxy (every shard).
meta = MetaData()
Table("sa_notes", meta, Column("id", Integer, primary_key=True), Column("body", String))
meta.create_all(engine)

now = datetime.now(timezone.utc)
with Session(engine) as s:
    # One unit of work inserting orders of several users (several shards).
    s.add_all([Order(id=base + i, created_at=now, user_id=base + i, restaurant_id=1, total=i, status="new") for i in range(8)])
    s.commit()
with Session(engine) as s:
    for o in s.scalars(select(Order).where(Order.id >= base, Order.id < base + 8)):
        o.status = "paid"  # UPDATE ... WHERE id = ? AND created_at = ?: every shard
    s.commit()
with Session(engine) as s:
    n = s.scalar(select(func.count()).select_from(Order).where(Order.status == "paid", Order.id >= base, Order.id < base + 8))
    assert n == 8, n
    s.delete(s.get(Order, (base, now)))
    s.commit()
with Session(engine) as s:
    # A failed unit of work leaves nothing behind on any shard.
    try:
        for o in s.scalars(select(Order).where(Order.id >= base + 1, Order.id < base + 8)):
            o.status = "half"
        s.flush()
        s.execute(text("SELECT 1/0"))
        s.commit()
        raise AssertionError("division by zero did not fail")
    except Exception as e:
        if isinstance(e, AssertionError):
            raise
        s.rollback()
    n = s.scalar(select(func.count()).select_from(Order).where(Order.status == "half"))
    assert n == 0, n
    left = s.scalar(select(func.count()).select_from(Order).where(Order.id >= base, Order.id < base + 8))
    assert left == 7, left
# stream_results / yield_per: a psycopg2 named cursor (DECLARE inside the
# transaction, FETCH FORWARD 2 at a time) on one shard.
with engine.connect() as c:
    got = [r[0] for r in c.execution_options(stream_results=True, yield_per=2).execute(
        text("SELECT x FROM generate_series(1, 7) x ORDER BY x"))]
    assert got == list(range(1, 8)), got
with Session(engine) as s:
    q = select(Order.id).where(Order.user_id == base + 1).order_by(Order.id)
    plain = list(s.scalars(q))
    got = list(s.scalars(q.execution_options(yield_per=1)))
    assert got == plain, (got, plain)
with engine.begin() as c:
    c.execute(text("DROP TABLE sa_notes"))
print("OK")
