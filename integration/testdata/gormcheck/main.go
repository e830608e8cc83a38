// Command gormcheck drives GORM (pgx, extended protocol) through
// shardproxy on 4 shards: AutoMigrate, CreateInBatches over several
// shards, FindInBatches, Save, Update, Delete (each in GORM's own
// transaction, over every shard), and a transaction rolled back by an
// error. It prints OK. Usage: gormcheck URL BASE_ID
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Order maps the delivery schema's orders (sharded by user_id).
type Order struct {
	ID           int64 `gorm:"primaryKey;autoIncrement:false"`
	UserID       int64
	RestaurantID int64
	Total        float64
	Status       string
}

// Note is a table of its own, not in the proxy's config.
type Note struct {
	ID   int64 `gorm:"primaryKey"`
	Body string
}

func main() {
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("OK")
}

func run(url, baseArg string) error {
	base, _ := strconv.ParseInt(baseArg, 10, 64)
	db, err := gorm.Open(postgres.Open(url), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		return err
	}
	if err := db.AutoMigrate(&Note{}); err != nil {
		return fmt.Errorf("automigrate: %w", err)
	}
	if err := db.Create(&Note{Body: "hello"}).Error; err != nil {
		return fmt.Errorf("create note: %w", err)
	}
	var orders []Order
	for i := int64(0); i < 10; i++ {
		orders = append(orders, Order{ID: base + i, UserID: base + i, RestaurantID: 1, Total: 1, Status: "gorm"})
	}
	if err := db.CreateInBatches(orders, 4).Error; err != nil {
		return fmt.Errorf("create in batches: %w", err)
	}
	seen := 0
	var batch []Order
	res := db.Where("id >= ? AND id < ?", base, base+10).FindInBatches(&batch, 3, func(tx *gorm.DB, n int) error {
		seen += len(batch)
		return nil
	})
	if res.Error != nil || seen != 10 {
		return fmt.Errorf("find in batches: %d rows, %v", seen, res.Error)
	}
	var o Order
	if err := db.First(&o, base+3).Error; err != nil {
		return fmt.Errorf("first: %w", err)
	}
	o.Status = "saved"
	if err := db.Save(&o).Error; err != nil { // every column, user_id unchanged, by id: every shard
		return fmt.Errorf("save: %w", err)
	}
	if err := db.Model(&o).Update("total", 9).Error; err != nil {
		return fmt.Errorf("update: %w", err)
	}
	var got Order
	if err := db.First(&got, base+3).Error; err != nil || got.Status != "saved" || got.Total != 9 {
		return fmt.Errorf("after save and update: %+v %v", got, err)
	}
	if err := db.Delete(&Order{}, base+4).Error; err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	undo := errors.New("undo")
	err = db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&Order{}).Where("id >= ? AND id < ?", base, base+10).Update("status", "half").Error; err != nil {
			return err
		}
		return undo
	})
	if !errors.Is(err, undo) {
		return fmt.Errorf("transaction: %v", err)
	}
	var n int64
	if err := db.Model(&Order{}).Where("status = ?", "half").Count(&n).Error; err != nil || n != 0 {
		return fmt.Errorf("rolled back update visible: %d %v", n, err)
	}
	if err := db.Model(&Order{}).Where("id >= ? AND id < ?", base, base+10).Count(&n).Error; err != nil || n != 9 {
		return fmt.Errorf("rows left: %d %v", n, err)
	}
	return db.Migrator().DropTable(&Note{})
}
