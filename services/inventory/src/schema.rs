//! The inventory tables, as diesel sees them (see migrations/inventory).

diesel::table! {
    products (product_id) {
        product_id -> Uuid,
        sku -> Text,
        name -> Text,
        currency -> Text,
        unit_price_minor -> Int8,
        on_hand -> Int8,
        reserved -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        import_source -> Nullable<Uuid>,
        import_row -> Nullable<Int8>,
        description -> Nullable<Text>,
        category -> Nullable<Text>,
        tags -> Array<Text>,
        version -> Int8,
    }
}

diesel::table! {
    reservations (order_id) {
        order_id -> Uuid,
        status -> Text,
        reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    reservation_lines (order_id, product_id) {
        order_id -> Uuid,
        product_id -> Uuid,
        quantity -> Int4,
    }
}

diesel::joinable!(reservation_lines -> reservations (order_id));
diesel::joinable!(reservation_lines -> products (product_id));
diesel::allow_tables_to_appear_in_same_query!(products, reservations, reservation_lines);
