"""Django through shardproxy on 4 shards: migrate (contrib apps' migrations,
DDL in transactions), save(), delete() and bulk_create over several users
(several shards). Usage: django_check.py HOST PORT BASE_ID"""
import sys

import django
from django.conf import settings

host, port, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "__main__"],
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "deliveryapp", "USER": "app",
                           "PASSWORD": "app", "HOST": host, "PORT": port,
                           # Server-side cursors over several shards are refused.
                           "DISABLE_SERVER_SIDE_CURSORS": True},
               # .iterator() on one shard: DECLARE ... NO SCROLL CURSOR WITH HOLD, FETCH, CLOSE.
               "cursors": {"ENGINE": "django.db.backends.postgresql", "NAME": "deliveryapp", "USER": "app",
                           "PASSWORD": "app", "HOST": host, "PORT": port}},
    USE_TZ=True, DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, models, transaction  # noqa: E402


class Order(models.Model):
    id = models.BigIntegerField(primary_key=True)
    user_id = models.BigIntegerField()
    restaurant_id = models.BigIntegerField()
    total = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.TextField()

    class Meta:
        app_label = "__main__"
        db_table = "orders"
        managed = False


call_command("migrate", verbosity=0)
with connection.cursor() as c:
    c.execute("SELECT count(*) FROM django_migrations")
    assert c.fetchone()[0] > 5

# bulk_create over several users: a multi-row INSERT over several shards.
Order.objects.bulk_create([Order(id=base + i, user_id=base + i, restaurant_id=1, total=i, status="new") for i in range(8)])
assert Order.objects.filter(id__gte=base, id__lt=base + 8).count() == 8
# save(): UPDATE orders SET user_id = ..., ... WHERE id = ... (every shard).
o = Order.objects.get(id=base + 3)
o.status = "saved"
o.save()
assert Order.objects.get(id=base + 3).status == "saved"
# An atomic block writing on several shards, rolled back by an error.
try:
    with transaction.atomic():
        Order.objects.filter(id__gte=base, id__lt=base + 8).update(status="half")
        raise RuntimeError("undo")
except RuntimeError:
    pass
assert Order.objects.filter(status="half").count() == 0
# queryset.delete() over several shards.
Order.objects.filter(id__gte=base, id__lt=base + 4).delete()
assert Order.objects.filter(id__gte=base, id__lt=base + 8).count() == 4
# .iterator() with a server-side cursor WITH HOLD (outside a transaction) on
# one shard: the client keeps that backend across its FETCHes.
Order.objects.bulk_create([Order(id=base + 100 + i, user_id=base + 100, restaurant_id=1, total=i, status="it")
                           for i in range(5)])
ids = [o.id for o in Order.objects.using("cursors").filter(user_id=base + 100).order_by("id").iterator(chunk_size=2)]
assert ids == [base + 100 + i for i in range(5)], ids
with transaction.atomic(using="cursors"):
    ids = [o.id for o in Order.objects.using("cursors").filter(user_id=base + 100).order_by("id").iterator(chunk_size=2)]
assert ids == [base + 100 + i for i in range(5)], ids
with connections["cursors"].cursor() as c:
    c.execute("SELECT count(*) FROM pg_cursors")
    assert c.fetchone()[0] == 0
print("OK")
